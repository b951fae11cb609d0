"""EmbeddedServer and config_or_embedded: start, health, stop, clean-up, errors, torch tokenizer."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tinkex_actors import ServiceClient
from tinkex_actors.errors import EmbeddedServerError, ValidationError
from tinkex_actors.server.embedded import EmbeddedServer, config_or_embedded, generate_api_key
from tinkex_actors.server.engines.torch._files import snapshot_dir
from tinkex_actors.server.engines.torch._tiny_model import LIGHT_FILES, tiny_revision

from ._helpers import API, MODEL


def _status(url: str, key: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"X-API-Key": key} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_null_server_lifecycle_and_cleanup() -> None:
    server = EmbeddedServer("null")
    with server:
        assert server.running
        assert server.port > 0
        assert server.base_url == f"http://127.0.0.1:{server.port}"
        assert _status(f"{server.base_url}{API}/healthz") == 200
        assert _status(f"{server.base_url}{API}/get_server_capabilities", "tml-wrong") == 401
        assert _status(f"{server.base_url}{API}/get_server_capabilities", server.api_key) == 200
        assert server.api_key not in repr(server)
        assert server.api_key not in repr(server.config())
        work = server.data_dir.parent
        assert server.data_dir.is_dir()
        with ServiceClient(server.config(timeout=30)) as service:
            caps = service.get_server_capabilities()
            assert [m.model_name for m in caps.supported_models] == [MODEL]
    assert not server.running
    assert server.process is None
    assert not work.exists()  # the generated data dir and log are gone


def test_given_data_dir_is_kept_and_restart_reuses_port(tmp_path: Path) -> None:
    key = generate_api_key()
    server = EmbeddedServer("null", data_dir=tmp_path / "data", api_key=key)
    try:
        server.start()
        port = server.port
        assert server.stop() == 0  # SIGTERM is a clean stop
        assert (tmp_path / "data").is_dir()
        server.start()
        assert server.port == port
        assert _status(f"{server.base_url}{API}/get_server_capabilities", key) == 200
        with pytest.raises(EmbeddedServerError, match="already running"):
            server.start()
    finally:
        server.close()
    assert (tmp_path / "data" / "server.db").is_file()


def test_start_failure_raises_with_the_log_tail(tmp_path: Path) -> None:
    server = EmbeddedServer("null", extra_args=("--workers", "0"), log_path=tmp_path / "s.log")
    with pytest.raises(EmbeddedServerError, match="exited with status 2") as info:
        server.start()
    assert "workers" in str(info.value)
    assert not server.running
    server.close()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"engine": "gpu"}, "engine"),
        ({"port": 70000}, "port"),
        ({"api_key": "secret"}, "api_key"),
        ({"extra_api_keys": ("tml-",)}, "extra_api_keys[0]"),
    ],
)
def test_bad_arguments_are_rejected(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        EmbeddedServer(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_base_url_before_start_is_an_error() -> None:
    with pytest.raises(EmbeddedServerError, match="not been started"):
        _ = EmbeddedServer("null").base_url


def test_config_or_embedded_prefers_the_environment() -> None:
    env = {"TINKER_BASE_URL": "http://127.0.0.1:9", "TINKER_API_KEY": "tml-from-env"}
    with config_or_embedded("null", env=env) as config:
        assert config.base_url == "http://127.0.0.1:9"
        assert config.api_key == "tml-from-env"
    with config_or_embedded("null", env={}) as config:
        assert config.base_url.startswith("http://127.0.0.1:")
        assert _status(f"{config.base_url}{API}/healthz") == 200
        url = config.base_url
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{url}{API}/healthz", timeout=2)


@pytest.mark.torch
def test_torch_tokenizer_is_in_the_hub_cache_when_healthz_answers(tmp_path: Path) -> None:
    """The race of earlier versions: healthz answered before the tokenizer was published."""
    hf_home = tmp_path / "hf"
    env = {**os.environ, "HF_HOME": str(hf_home)}
    started = time.monotonic()
    with EmbeddedServer("torch", data_dir=tmp_path / "data", env=env) as server:
        healthy_after = time.monotonic() - started
        snapshot = snapshot_dir(hf_home / "hub", MODEL, tiny_revision())
        present = {name for name in LIGHT_FILES if (snapshot / name).is_file()}
        assert present == set(LIGHT_FILES)
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(snapshot / "tokenizer.json"))
        assert tokenizer.decode(tokenizer.encode("The capital of France is Paris.").ids) == (
            "The capital of France is Paris."
        )
        assert server.running
    print(f"torch server healthy after {healthy_after:.2f} s (fresh data dir and cache)")


def test_a_forgotten_server_is_stopped_at_interpreter_exit(tmp_path: Path) -> None:
    script = (
        "from tinkex_actors.server.embedded import EmbeddedServer\n"
        "server = EmbeddedServer('null').start()\n"
        "print(server.base_url, server.process.pid, flush=True)\n"
        "del server\n"  # no stop(): the atexit hook must do it
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    url, pid = done.stdout.split()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{url}{API}/healthz", timeout=2)
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid), 0)
