"""Server lifecycle on private null servers: restart survival, crash leftovers, SIGTERM, CLI."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from _servers import ServerHandle, session_server

from tinkex_actors.cli import main as tinkex_main

from ._helpers import Api, datum_json

DATA = [datum_json([1, 2, 3, 4], [2, 3, 4, 5], [1.0, 1.0, 0.5, 0.0])]


@pytest.fixture
def private_server(request: pytest.FixtureRequest) -> Iterator[ServerHandle]:
    args: tuple[str, ...] = getattr(request, "param", ())
    with session_server("null", extra_args=args) as handle:
        yield handle


def _step(api: Api, model: str, seq: int) -> int:
    api.fwdbwd(model, seq, DATA)
    api.optim(model, seq + 1, lr=0.01)
    return seq + 2


def test_restart_keeps_sessions_runs_checkpoints_and_training_is_exact(
    private_server: ServerHandle,
) -> None:
    api = Api(private_server)
    try:
        session = api.session()
        model = api.create_model(session, seed=5)
        seq = 1
        for _ in range(3):
            seq = _step(api, model, seq)
        path = api.save(model, seq, "resume")
        seq += 1
        sampler_path = api.save(model, seq, "for-sampling", sampler=True)
        seq += 1
        sampler = api.ok(
            "/create_sampling_session",
            {"session_id": session, "sampling_session_seq_id": 0, "model_path": sampler_path},
        )["sampling_session_id"]
        seq = _step(api, model, seq)
        reference = api.fwdbwd(model, seq, DATA, forward_only=True)["metrics"]["loss:sum"]
        old_future = api.ok("/optim_step", {"model_id": model, "seq_id": seq + 1})
        api.result(old_future)

        # A crash mid-save leaves a temp dir and a renamed-but-unrecorded dir behind.
        data = private_server.data_dir
        (data / "tmp" / "interrupted").mkdir()
        (data / "tmp" / "interrupted" / "adapter_model.safetensors").write_bytes(b"partial")
        (data / "checkpoints" / "unrecorded").mkdir()
        kept = {p.name for p in (data / "checkpoints").iterdir()} - {"unrecorded"}

        assert private_server.restart() == 0

        assert not (data / "tmp" / "interrupted").exists()
        assert not (data / "checkpoints" / "unrecorded").exists()
        saved = {p.name for p in (data / "checkpoints").iterdir()} - kept
        assert len(saved) == 1  # the live model's shutdown save
        assert api.post("/session_heartbeat", {"session_id": session}).status_code == 200
        assert api.get(f"/training_runs/{model}").json()["last_checkpoint"]["tinker_path"] == path
        listed = api.get(f"/training_runs/{model}/checkpoints").json()["checkpoints"]
        assert {c["tinker_path"] for c in listed} == {path, sampler_path}
        # Saved at shutdown, the live model is restored by the next call naming it.
        assert api.result(api.ok("/optim_step", {"model_id": model, "seq_id": seq + 2}))
        assert (
            api.post("/retrieve_future", {"request_id": old_future["request_id"]}).status_code
            == 410
        )
        # The sampler made from a path is rebuilt on demand.
        sample = api.result(
            api.ok(
                "/asample",
                {
                    "sampling_session_id": sampler,
                    "prompt": {"chunks": [{"type": "encoded_text", "tokens": [4, 5]}]},
                    "sampling_params": {"max_tokens": 2, "seed": 1},
                },
            )
        )
        assert len(sample["sequences"][0]["tokens"]) == 2
        # Restore exactly: create-via-load with the optimizer state, same step, same loss.
        load = api.ok(
            "/load_weights",
            {"session_id": session, "model_seq_id": 1, "path": path, "optimizer": True},
        )
        assert load["model_id"] == f"{session}:train:1"
        restored = api.result(load)["model_id"]
        assert restored == f"{session}:train:1"
        info = api.ok("/get_info", {"model_id": restored})
        assert info["lora_rank"] == 4
        after = _step(api, restored, 1)
        assert (
            api.fwdbwd(restored, after, DATA, forward_only=True)["metrics"]["loss:sum"] == reference
        )
    finally:
        api.close()


@pytest.mark.parametrize("private_server", [("--seq-gap-timeout=1",)], indirect=True)
def test_a_gap_that_never_fills_does_not_wedge_the_model(private_server: ServerHandle) -> None:
    api = Api(private_server)
    try:
        model = api.create_model(api.session())
        started = time.monotonic()
        out = api.fwdbwd(model, 2, DATA)  # seq 1 never comes
        assert time.monotonic() - started >= 0.9
        assert out["metrics"]["loss:sum"] > 0
        assert "seq_gap_skipped" in private_server.log_tail()
    finally:
        api.close()


@pytest.mark.parametrize(
    "private_server", [("--simulate-ms=300", "--poll-hold-seconds=20")], indirect=True
)
def test_sigterm_releases_polls_finishes_work_and_exits_zero(private_server: ServerHandle) -> None:
    api = Api(private_server)
    try:
        model = api.create_model(api.session())
        running = api.ok(
            "/forward_backward",
            {
                "forward_backward_input": {"data": DATA, "loss_fn": "cross_entropy"},
                "model_id": model,
                "seq_id": 1,
            },
        )
        for seq in (2, 3):
            api.ok("/optim_step", {"model_id": model, "seq_id": seq})
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            poll = pool.submit(api.post, "/retrieve_future", {"request_id": running["request_id"]})
            time.sleep(0.1)
            started = time.monotonic()
            code = private_server.stop()
            elapsed = time.monotonic() - started
            answer = poll.result(timeout=30)
        assert code == 0
        assert elapsed < 10
        assert answer.status_code == 200
        assert "Traceback" not in private_server.log_tail()
    finally:
        api.close()


def test_generated_key_is_printed_and_required() -> None:
    with tempfile.TemporaryDirectory(prefix="tinkex-genkey-") as root:
        port_file, out_file = Path(root) / "port", Path(root) / "out.log"
        command = [
            sys.executable,
            "-c",
            "import sys; from tinkex_actors.cli import main; sys.exit(main())",
            "server",
            "--engine=null",
            "--port=0",
            f"--port-file={port_file}",
            f"--data-dir={root}/data",
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with out_file.open("wb") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 30
            while not (port_file.exists() and port_file.read_text()):
                assert process.poll() is None, out_file.read_text()
                assert time.monotonic() < deadline, out_file.read_text()
                time.sleep(0.05)
            (line,) = [ln for ln in out_file.read_text().splitlines() if "generated API key" in ln]
            key = line.rsplit(" ", 1)[1]
            assert key.startswith("tml-")
            base = f"http://127.0.0.1:{port_file.read_text()}/api/v1"
            while True:
                try:
                    requests.get(f"{base}/healthz", timeout=2)
                    break
                except requests.ConnectionError:
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
            assert requests.post(f"{base}/client/config", json={}, timeout=10).status_code == 401
            ok = requests.post(
                f"{base}/client/config", json={}, headers={"X-API-Key": key}, timeout=10
            )
            assert ok.status_code == 200
            process.send_signal(signal.SIGTERM)
            assert process.wait(20) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)


def test_cli_help_lists_server_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        tinkex_main(["server", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in (
        "--host",
        "--port",
        "--data-dir",
        "--api-key",
        "--engine",
        "--model",
        "--simulate-ms",
    ):
        assert flag in text
    assert tinkex_main([]) == 2
