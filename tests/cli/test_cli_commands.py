"""The ``tinkex`` command end to end (``main(argv)``) against the embedded null server."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from _servers import ServerHandle

from tinkex_actors import Config
from tinkex_actors._version import __version__
from tinkex_actors.cli import main
from tinkex_actors.cli._common import ProgressBar, format_size, format_table
from tinkex_actors.rest import RestClient


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def _paths(server: ServerHandle, run: str) -> list[str]:
    config = Config(api_key=server.api_key, base_url=server.base_url)
    with RestClient(config) as rest:
        return [c.tinker_path for c in rest.iter_checkpoints(run)]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = _run(capsys, "version")
    assert status == 0
    assert __version__ in out
    status, out, _ = _run(capsys, "version", "--json")
    assert status == 0
    assert json.loads(out)["version"] == __version__


def test_checkpoint_list(
    capsys: pytest.CaptureFixture[str], cli_env: ServerHandle, seeded: dict[str, str]
) -> None:
    status, out, err = _run(capsys, "checkpoint", "list", "--run-id", seeded["model"])
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["TINKER", "PATH", "TYPE", "SIZE", "PUBLIC", "CREATED", "EXPIRES"]
    assert seeded["sampler"] in lines[1]
    assert "sampler" in lines[1]
    assert seeded["weights"] in lines[2]
    assert "training" in lines[2]
    assert lines[-1] == "Showing 1-2 of 2 checkpoints."

    status, out, _ = _run(capsys, "checkpoint", "list", "--limit", "1", "--json")
    data = json.loads(out)
    assert status == 0
    assert len(data["checkpoints"]) == 1
    assert data["cursor"]["limit"] == 1
    assert data["checkpoints"][0]["tinker_path"] == seeded["sampler"]

    status, out, _ = _run(capsys, "checkpoint", "list", "--limit", "0", "--json")
    every = [c["tinker_path"] for c in json.loads(out)["checkpoints"]]
    assert status == 0
    assert {seeded["weights"], seeded["sampler"]} <= set(every)
    assert json.loads(out)["cursor"] is None


def test_checkpoint_info(
    capsys: pytest.CaptureFixture[str], cli_env: ServerHandle, seeded: dict[str, str]
) -> None:
    status, out, err = _run(capsys, "checkpoint", "info", seeded["weights"])
    assert status == 0, err
    pairs = [re.split(r"\s{2,}", line, maxsplit=1) for line in out.splitlines()]
    fields = dict(pairs)
    assert fields["Tinker path"] == seeded["weights"]
    assert fields["Base model"] == "tinkex/tiny-llama"
    assert fields["LoRA"] == "rank 4"
    status, out, _ = _run(capsys, "checkpoint", "info", seeded["sampler"], "--json")
    data = json.loads(out)
    assert data["checkpoint"]["checkpoint_type"] == "sampler"
    assert data["weights_info"]["lora_rank"] == 4
    missing = seeded["weights"].rsplit("/", 1)[0] + "/nope"
    status, out, err = _run(capsys, "checkpoint", "info", missing)
    assert status == 1
    assert out == ""
    assert err.startswith("tinkex: error: ")
    assert err.count("\n") == 1
    assert "nope" in err


def test_checkpoint_download(
    capsys: pytest.CaptureFixture[str],
    cli_env: ServerHandle,
    seeded: dict[str, str],
    tmp_path: Path,
) -> None:
    status, out, err = _run(
        capsys, "checkpoint", "download", seeded["weights"], "-o", str(tmp_path)
    )
    assert status == 0, err
    target = Path(out.strip())
    assert target.parent == tmp_path
    assert (target / "adapter_model.safetensors").is_file()
    assert err.startswith("Downloading [")
    assert "100.0%" in err
    assert err.count("\n") == 1
    # Again: refused without --force, one line, non-zero.
    status, out, err = _run(
        capsys, "checkpoint", "download", seeded["weights"], "-o", str(tmp_path)
    )
    assert status == 1
    assert "--force" in err
    assert err.count("\n") == 1
    assert "Traceback" not in err
    status, out, err = _run(
        capsys,
        "checkpoint",
        "download",
        seeded["weights"],
        "-o",
        str(tmp_path),
        "--force",
        "--json",
    )
    assert status == 0
    assert err == ""
    data = json.loads(out)
    assert data["path"] == str(target)
    assert "adapter_config.json" in data["files"]


def test_checkpoint_delete_confirmation(
    capsys: pytest.CaptureFixture[str],
    cli_env: ServerHandle,
    seeded: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    status, out, err = _run(capsys, "checkpoint", "delete", seeded["weights"])
    assert status == 1
    assert "[y/N]" in err
    assert "aborted" in err
    assert seeded["weights"] in _paths(cli_env, seeded["model"])
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    status, out, err = _run(capsys, "checkpoint", "delete", seeded["weights"])
    assert status == 0
    assert out.strip() == f"Deleted {seeded['weights']}"
    assert _paths(cli_env, seeded["model"]) == [seeded["sampler"]]
    # A bad path among several: nothing is asked or deleted.
    status, out, err = _run(
        capsys, "checkpoint", "delete", seeded["sampler"], "tinker://x", "--yes"
    )
    assert status == 2
    assert "tinker://<training_run_id>" in err
    assert err.count("\n") == 1
    assert _paths(cli_env, seeded["model"]) == [seeded["sampler"]]
    # Several paths, one missing: the others are deleted, the failure reported, status 1.
    status, out, err = _run(
        capsys, "checkpoint", "delete", "--yes", seeded["sampler"], seeded["weights"]
    )
    assert status == 1
    assert f"Deleted {seeded['sampler']}" in out
    assert seeded["weights"] in err
    assert err.count("\n") == 1
    assert _paths(cli_env, seeded["model"]) == []


def test_publish_unpublish_set_ttl(
    capsys: pytest.CaptureFixture[str], cli_env: ServerHandle, seeded: dict[str, str]
) -> None:
    path = seeded["weights"]
    assert _run(capsys, "checkpoint", "publish", path)[0] == 0
    status, out, err = _run(capsys, "checkpoint", "publish", path)
    assert status == 1
    assert "409" in err
    assert err.count("\n") == 1
    status, out, _ = _run(capsys, "checkpoint", "list", "--run-id", seeded["model"], "--json")
    public = {c["tinker_path"]: c["public"] for c in json.loads(out)["checkpoints"]}
    assert public[path] is True
    assert _run(capsys, "checkpoint", "unpublish", path)[0] == 0
    assert _run(capsys, "checkpoint", "set-ttl", path, "--ttl", "7200")[0] == 0
    status, out, _ = _run(capsys, "checkpoint", "info", path, "--json")
    data = json.loads(out)["checkpoint"]
    assert data["public"] is False
    assert data["expires_at"] is not None
    assert _run(capsys, "checkpoint", "set-ttl", path, "--remove")[0] == 0
    status, out, _ = _run(capsys, "checkpoint", "info", path, "--json")
    assert "expires_at" not in json.loads(out)["checkpoint"]


def test_run_list_and_info(
    capsys: pytest.CaptureFixture[str], cli_env: ServerHandle, seeded: dict[str, str]
) -> None:
    status, out, err = _run(capsys, "run", "list", "--limit", "0")
    assert status == 0, err
    assert out.splitlines()[0].split()[:3] == ["RUN", "ID", "BASE"]
    assert any(line.startswith(seeded["model"]) for line in out.splitlines())
    status, out, _ = _run(capsys, "run", "list", "--limit", "1", "--json")
    assert status == 0
    assert json.loads(out)["cursor"]["limit"] == 1
    status, out, _ = _run(capsys, "run", "info", seeded["model"])
    assert status == 0
    assert "rank 4" in out
    assert seeded["sampler"] in out
    status, out, _ = _run(capsys, "run", "info", seeded["weights"], "--json")
    assert status == 0
    assert json.loads(out)["training_run_id"] == seeded["model"]


def test_errors_are_one_line(
    capsys: pytest.CaptureFixture[str],
    null_server: ServerHandle,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TINKER_API_KEY", raising=False)
    status, out, err = _run(capsys, "run", "list", "--base-url", null_server.base_url)
    assert out == ""
    assert status == 2
    assert "TINKER_API_KEY" in err
    assert err.count("\n") == 1
    status, out, err = _run(
        capsys,
        "run",
        "list",
        "--base-url",
        null_server.base_url,
        "--api-key",
        "tml-wrong-key-00000",
    )
    assert status == 1
    assert out == ""
    assert "401" in err
    assert err.count("\n") == 1
    assert "tml-wrong-key-00000" not in err
    status, _out, err = _run(
        capsys, "run", "list", "--api-key", "tml-a-key-000000000", "--base-url",
        "http://127.0.0.1:9", "--max-retries", "0",
    )  # fmt: skip
    assert status == 1
    assert err.startswith("tinkex: error: ")
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_helpers() -> None:
    assert format_size(None) == "-"
    assert format_size(512) == "512 B"
    assert format_size(1536) == "1.5 KiB"
    assert format_size(5 * 1024**3) == "5.0 GiB"
    assert format_table(["A", "BB"], [["x", "y"], ["long", ""]]) == "A     BB\nx     y\nlong"
    stream = io.StringIO()
    bar = ProgressBar("Get", stream=stream, width=10)
    assert bar.render(5, 10) == "Get [#####-----]  50.0% 5 B / 10 B"
    assert bar.render(7, None) == "Get 7 B"
    bar(3, 10)
    bar(10, 10)
    assert stream.getvalue() == ""  # not a terminal: only the final line
    bar.finish()
    assert stream.getvalue() == "Get [##########] 100.0% 10 B / 10 B\n"
