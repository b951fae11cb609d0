"""ServiceClient: bootstrap, session, heartbeat, tenants, shutdown."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from _servers import ServerHandle

from tinkex_actors import ActorFuture, Config, ServiceClient, types
from tinkex_actors.actors._session import Heartbeat
from tinkex_actors.actors._tenant import tenants
from tinkex_actors.errors import (
    ClientClosedError,
    ConfigError,
    NotFoundError,
    ValidationError,
)
from tinkex_actors.testing import FakeBackend

from ._backends import Recorder
from .conftest import BASE_MODEL, datum

PROMPT = types.ModelInput.from_ints([1, 2, 3])


def _heartbeat_status(server: ServerHandle, session_id: str) -> int:
    request = urllib.request.Request(
        f"{server.base_url}/api/v1/session_heartbeat",
        data=orjson.dumps({"session_id": session_id}),
        headers=server.headers(**{"Content-Type": "application/json"}),
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_bootstrap_sends_config_then_session(config: Config) -> None:
    tagged = config.with_(tags=("a", "b"), user_metadata={"team": "x"}, project_id="p1")
    recorder = Recorder(tagged)
    with ServiceClient.start_link(tagged, backend=recorder) as service:
        paths = [e.path for e in recorder.sent("")]
        assert paths[:3] == [
            "/api/v1/client/config",
            "/api/v1/client/dynamic_config",
            "/api/v1/create_session",
        ]
        body = orjson.loads(recorder.sent("/create_session")[0].body or b"")
        assert body["tags"] == ["a", "b"]
        assert body["user_metadata"] == {"team": "x"}
        assert body["sdk_version"] == "0.38.0"
        assert body["project_id"] == "p1"
        assert service.session_id
        assert not service.closed
        assert tagged.api_key not in repr(service)
        caps = service.get_server_capabilities()
        assert BASE_MODEL in caps.model_names
        # The server's chunk limit (2) wins over the Config's default (128).
        assert service._runtime.chunk_limits.max_datums == 2


def test_client_config_is_mandatory_and_dynamic_config_optional() -> None:
    config = Config(api_key="tml-unit-test-key", base_url="http://127.0.0.1:9")
    missing = FakeBackend([FakeBackend.reply(404, b'{"detail": "no"}')])
    with pytest.raises(NotFoundError):
        ServiceClient(config, backend=missing)
    assert len(missing.sent) == 1
    ok = FakeBackend(
        [
            FakeBackend.reply(200, b'{"fwdbwd_max_chunk_len": 7}'),
            FakeBackend.reply(404, b"{}"),
            FakeBackend.reply(200, b'{"session_id": "s-1", "warning_message": "careful"}'),
        ],
        handler=lambda request: FakeBackend.reply(204, b""),
    )
    service = ServiceClient(config.with_(heartbeat_interval=60.0), backend=ok)
    try:
        assert service.session_id == "s-1"
        assert service._runtime.chunk_limits.max_datums == 7
    finally:
        service.close()
    assert ok.sent[-1].url.endswith("/api/v1/sessions/s-1/finish")
    assert orjson.loads(ok.sent[-1].body or b"") == {"reason": {"type": "success"}, "detail": None}


def test_rest_client_sees_the_session_and_its_runs(service: ServiceClient) -> None:
    training = service.create_lora_training_client(BASE_MODEL, timeout=30)
    rest = service.create_rest_client()
    try:
        session = rest.get_session(service.session_id)
        assert training.model_id in session.training_run_ids
        run = rest.get_training_run(training.model_id)
        assert run.base_model == BASE_MODEL
    finally:
        rest.close()


def test_session_telemetry_is_uploaded_only_when_enabled(config: Config) -> None:
    recorder = Recorder(config.with_(telemetry_enabled=True))
    with ServiceClient(config.with_(telemetry_enabled=True), backend=recorder) as service:
        session_id = service.session_id
    batches = [orjson.loads(e.body or b"") for e in recorder.sent("/api/v1/telemetry")]
    assert [b["events"][0]["event"] for b in batches] == ["SESSION_START", "SESSION_END"]
    assert all(b["session_id"] == session_id for b in batches)
    assert batches[1]["events"][0]["duration"].startswith("PT")
    assert config.api_key.encode() not in b"".join(e.body or b"" for e in recorder.sent(""))
    # The end event goes before the session's finish.
    paths = [e.path for e in recorder.sent("")]
    assert paths.index("/api/v1/telemetry", paths.index("/api/v1/telemetry") + 1) < len(paths) - 1
    quiet = Recorder(config.with_(telemetry_enabled=False))
    with ServiceClient(config.with_(telemetry_enabled=False), backend=quiet):
        pass
    assert quiet.sent("/api/v1/telemetry") == []


def test_options_and_config_are_exclusive(config: Config) -> None:
    with pytest.raises(ValidationError):
        ServiceClient(config, timeout=5)
    with pytest.raises(ConfigError):
        ServiceClient(api_key="not-a-key")
    with pytest.raises(ValidationError):
        ServiceClient(config, max_restarts=-1)


def test_heartbeat_runs_on_its_own_thread_and_close_finishes_the_session(
    null_server: ServerHandle, config: Config
) -> None:
    service = ServiceClient(config.with_(heartbeat_interval=0.05))
    tree = service._tree
    deadline = time.monotonic() + 10
    while tree.heartbeat.beats < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert tree.heartbeat.beats >= 3
    assert tree.heartbeat.thread.daemon
    assert _heartbeat_status(null_server, service.session_id) == 200
    service.close()
    assert not tree.heartbeat.running
    # Finished: the server answers 410 to a heartbeat now.
    assert _heartbeat_status(null_server, service.session_id) == 410


def test_closed_service_client_raises_at_once(service: ServiceClient) -> None:
    training = service.create_lora_training_client(BASE_MODEL, timeout=30)
    sampler = service.create_sampling_client(base_model=BASE_MODEL, timeout=30)
    service.close()
    service.close()  # idempotent
    assert service.closed
    calls: list[Callable[[], object]] = [
        lambda: service.create_lora_training_client(BASE_MODEL),
        lambda: service.create_sampling_client(base_model=BASE_MODEL),
        lambda: service.get_server_capabilities(),
        lambda: service.create_rest_client(),
        lambda: training.forward_backward([datum([1, 2, 3])], "cross_entropy"),
        lambda: training.save_state("x"),
        lambda: sampler.sample(PROMPT, types.SamplingParams(max_tokens=1)),
    ]
    for call in calls:
        with pytest.raises(ClientClosedError):
            call()


def test_close_with_in_flight_work_fails_it_promptly(slow_server: ServerHandle) -> None:
    config = Config(api_key=slow_server.api_key, base_url=slow_server.base_url)
    service = ServiceClient(config)
    training = service.create_lora_training_client(BASE_MODEL, timeout=30)
    sampler = service.create_sampling_client(base_model=BASE_MODEL, timeout=30)
    batch = [datum(list(range(1, 9)))]
    futures: list[ActorFuture[Any]] = []
    for _ in range(10):  # 20 x 50 ms of queued server work
        futures.append(training.forward_backward(batch, "cross_entropy"))
        futures.append(training.optim_step(types.AdamParams()))
    futures += [sampler.sample(PROMPT, types.SamplingParams(max_tokens=2)) for _ in range(20)]
    threads_before_close = {t.name for t in threading.enumerate()}
    service.close(timeout=10)
    outcomes = [f.exception(timeout=5) for f in futures]  # every future is answered: no hang
    assert any(isinstance(o, ClientClosedError) for o in outcomes)
    assert all(o is None or isinstance(o, ClientClosedError) for o in outcomes)
    tree_threads = {n for n in threads_before_close if n.startswith("tinkex-")}
    assert tree_threads
    alive = {t.name for t in threading.enumerate()} & tree_threads
    # Workers still inside a server long poll (hold: 2 s) exit when it returns; nothing else.
    assert all(name.startswith(f"tinkex-{config.tenant_id[:8]}") for name in alive)


def test_tenants_are_shared_by_equal_configs_and_released_on_last_close(
    config: Config,
) -> None:
    count = len(tenants)
    first = ServiceClient(config)
    second = ServiceClient(config)
    other = ServiceClient(config.with_(max_retries=3))
    try:
        assert first._runtime.tenant is second._runtime.tenant
        assert first._runtime.tenant is not other._runtime.tenant
        assert first.session_id != second.session_id
        assert len(tenants) == count + 2
        sampler = second.create_sampling_client(base_model=BASE_MODEL, timeout=30)
        first.close()
        # The shared tenant lives on for the second client.
        assert sampler.sample(PROMPT, types.SamplingParams(max_tokens=2)).result(30).sequences
        assert not second._runtime.pool.closed
    finally:
        first.close()
        second.close()
        other.close()
    assert len(tenants) == count
    assert second._runtime.pool.closed


FORGETFUL = textwrap.dedent(
    """
    import sys
    from tinkex_actors import ActorFuture, Config, ServiceClient, types

    config = Config(api_key=sys.argv[1], base_url=sys.argv[2])
    service = ServiceClient(config)
    training = service.create_lora_training_client("tinkex/tiny-llama", timeout=30)
    sampler = service.create_sampling_client(base_model="tinkex/tiny-llama", timeout=30)
    training.forward_backward(
        [types.Datum(types.ModelInput.from_ints([1, 2, 3]),
                     {"target_tokens": [2, 3, 4], "weights": [1.0, 1.0, 1.0]})],
        "cross_entropy",
    )
    sampler.sample(types.ModelInput.from_ints([1, 2]), types.SamplingParams(max_tokens=2))
    print(service.session_id, flush=True)
    # no close(): the process must still exit promptly
    """
)


def test_a_forgotten_close_does_not_hang_exit(slow_server: ServerHandle, tmp_path: Path) -> None:
    script = tmp_path / "forgetful.py"
    script.write_text(FORGETFUL)
    done = subprocess.run(
        [sys.executable, str(script), slow_server.api_key, slow_server.base_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    session_id = done.stdout.strip()
    # The atexit hook finished the session.
    assert _heartbeat_status(slow_server, session_id) == 410


def test_heartbeat_counts_failures_warns_late_and_stops_on_410(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = Config(api_key="tml-unit-heartbeat-key", base_url="http://127.0.0.1:9")
    backend = FakeBackend(
        [
            FakeBackend.reply(200, b"{}"),
            FakeBackend.reply(500, b"{}"),
            FakeBackend.reply(503, b"{}"),
            FakeBackend.reply(410, b'{"detail": "finished"}'),
        ]
    )
    from tinkex_actors.transport import HTTPTransport

    with HTTPTransport(config, backend=backend) as transport:
        heartbeat = Heartbeat(transport, "s-1", interval=60.0)
        assert heartbeat.beat()
        assert heartbeat.beats == 1
        with caplog.at_level(logging.WARNING, logger="tinkex_actors.session"):
            assert heartbeat.beat()  # a failure, but recent success: no warning
            assert not [r for r in caplog.records if "heartbeat_failing" in r.getMessage()]
            heartbeat.last_success -= 200.0
            assert heartbeat.beat()
            assert [r for r in caplog.records if "heartbeat_failing" in r.getMessage()]
        assert heartbeat.failures == 2
        assert not heartbeat.beat()  # 410: the loop stops
    sent = [orjson.loads(s.body or b"") for s in backend.sent]
    assert sent[0] == {"session_id": "s-1", "type": "session_heartbeat"}
    assert all(s.headers["x-stainless-retry-count"] == "0" for s in backend.sent)
