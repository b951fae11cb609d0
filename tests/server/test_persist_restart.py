"""Live models across restarts (null engine): saved by a graceful stop, lost by SIGKILL.

One private null server per module, restarted by the tests (``--seq-gap-timeout=5``: a
restored model whose ``seq_id`` sequence did not continue would stall 5 s and log
``seq_gap_skipped``, which the tests look for).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import tinker
from _servers import ServerHandle, session_server
from tinker import types

from tinkex_actors.errors import EmbeddedServerError
from tinkex_actors.server.embedded import EmbeddedServer

from ._helpers import MODEL, Api, datum_json
from ._sdk import ce_datum, service_client

DATA = [datum_json([1, 2, 3, 4], [2, 3, 4, 5], [1.0, 1.0, 0.5, 0.0])]
SDK_DATA = [ce_datum([3 + i, 7 + i, 11 + i, 15 + i]) for i in range(3)]
GAP = "seq_gap_skipped"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerHandle]:
    with session_server("null", extra_args=("--seq-gap-timeout=5",)) as handle:
        yield handle


@pytest.fixture
def api(server: ServerHandle) -> Iterator[Api]:
    client = Api(server)
    yield client
    client.close()


def _steps(api: Api, model: str, seq: int, count: int) -> tuple[list[float], int]:
    """``count`` forward_backward + optim_step pairs from ``seq``; (losses, next seq)."""
    losses = []
    for _ in range(count):
        losses.append(api.fwdbwd(model, seq, DATA)["metrics"]["loss:sum"])
        api.optim(model, seq + 1, lr=0.05)
        seq += 2
    return losses, seq


def _restored(log: str, model: str) -> int:
    """How many times the log says ``model`` was restored from a shutdown save."""
    return sum("model_restored" in line and model in line for line in log.splitlines())


def _saved_dirs(server: ServerHandle) -> set[str]:
    return {p.name for p in (server.data_dir / "checkpoints").iterdir()}


def test_graceful_restart_resumes_training_exactly(server: ServerHandle, api: Api) -> None:
    session = api.session()
    reference, _ = _steps(api, api.create_model(session, 0, seed=9), 1, 6)
    model = api.create_model(session, 1, seed=9)
    before, seq = _steps(api, model, 1, 3)
    other = api.create_model(session, 2, seed=1)
    on_disk = _saved_dirs(server)

    assert server.restart() == 0
    saves = _saved_dirs(server) - on_disk
    assert len(saves) == 3  # one per live model

    after, seq = _steps(api, model, seq, 2)
    assert before + after == reference[:5]  # the same numbers, step by step
    log = server.log_tail(50_000)
    assert GAP not in log  # the seq_id sequence went on where it stopped
    assert _restored(log, model) == 1
    assert len(_saved_dirs(server) - on_disk) == 2  # the restore consumed its save
    # Another graceful restart saves it again; the untouched model still has its first save.
    assert server.restart() == 0
    last, _ = _steps(api, model, seq, 1)
    assert before + after + last == reference
    assert api.fwdbwd(other, 1, DATA)["metrics"]["loss:sum"] > 0
    assert GAP not in server.log_tail(50_000)
    _finish(api, session)


def test_sigkill_loses_live_models_and_says_so(server: ServerHandle, api: Api) -> None:
    session = api.session()
    model = api.create_model(session)
    _steps(api, model, 1, 1)
    unloaded = api.create_model(session, 1)
    assert api.result(api.ok("/unload_model", {"model_id": unloaded}))["model_id"] == unloaded
    checkpoint = api.save(model, 3, "before-kill")

    _kill_and_start(server)

    lost = api.post("/forward_backward", _fb(model, 4))
    assert lost.status_code == 410
    detail = lost.json()["detail"]
    assert "lost" in detail
    assert "create_training_client_from_state" in detail
    gone = api.post("/optim_step", {"model_id": unloaded, "seq_id": 1})
    assert gone.status_code == 404  # unloaded on purpose: not "lost"
    assert "not loaded" in gone.json()["detail"]
    assert api.ok("/get_info", {"model_id": model})["lora_rank"] == 4
    # A later graceful restart does not bring it back; its checkpoint does.
    assert server.restart() == 0
    assert api.post("/forward_backward", _fb(model, 4)).status_code == 410
    restored = api.ok(
        "/load_weights", {"session_id": session, "model_seq_id": 2, "path": checkpoint}
    )
    assert api.result(restored)["model_id"] == f"{session}:train:2"
    _finish(api, session)


def _finish(api: Api, session: str) -> None:
    """End a test's session, so later restarts have none of its models to save."""
    finish = api.post(f"/sessions/{session}/finish", {"reason": {"type": "success"}})
    assert finish.status_code == 204


def _kill_and_start(server: ServerHandle) -> None:
    """SIGKILL the server (as a crash: nothing is saved), then start it again."""
    process = server.process
    assert process is not None
    process.kill()
    process.wait(30)
    server.stop()
    server.start()


def _fb(model: str, seq: int) -> dict[str, object]:
    return {
        "forward_backward_input": {"data": DATA, "loss_fn": "cross_entropy"},
        "model_id": model,
        "seq_id": seq,
    }


def test_a_saved_model_goes_with_its_session(server: ServerHandle, api: Api) -> None:
    session = api.session()
    model = api.create_model(session)
    _steps(api, model, 1, 1)
    on_disk = _saved_dirs(server)
    assert server.restart() == 0
    assert len(_saved_dirs(server) - on_disk) == 1
    finish = api.post(f"/sessions/{session}/finish", {"reason": {"type": "success"}})
    assert finish.status_code == 204
    assert _saved_dirs(server) - on_disk == set()  # the save was deleted with the session
    gone = api.post("/optim_step", {"model_id": model, "seq_id": 3})
    assert gone.status_code == 404
    assert "not loaded" in gone.json()["detail"]


def test_official_sdk_trains_on_across_a_graceful_restart(server: ServerHandle) -> None:
    adam = types.AdamParams(learning_rate=1e-2)
    with service_client(server) as service:

        def steps(training: tinker.TrainingClient, count: int) -> list[float]:
            losses = []
            for _ in range(count):
                step = training.forward_backward(SDK_DATA, "cross_entropy")
                training.optim_step(adam).result()
                losses.append(step.result().metrics["loss:sum"])
            return losses

        reference = steps(service.create_lora_training_client(MODEL, rank=4, seed=3).result(), 4)
        training = service.create_lora_training_client(MODEL, rank=4, seed=3).result()
        before = steps(training, 2)
        assert server.restart() == 0
        after = steps(training, 2)
        assert before + after == reference
        sampler = training.save_weights_and_get_sampling_client().result()
        prompt = types.ModelInput.from_ints([5, 6, 7])
        sample = sampler.sample(prompt, 1, types.SamplingParams(max_tokens=2, seed=1)).result()
        assert len(sample.sequences[0].tokens) == 2
    assert GAP not in server.log_tail(50_000)


def test_embedded_server_restarts_with_or_without_its_state(tmp_path: Path) -> None:
    with EmbeddedServer("null") as embedded:
        handle = ServerHandle(
            engine="null",
            data_dir=embedded.data_dir,
            log_path=embedded.log_path,
            hf_home=tmp_path,
            api_key=embedded.api_key,
            port=embedded.port,
        )
        api = Api(handle)
        try:
            session = api.session()
            model = api.create_model(session)
            _steps(api, model, 1, 1)
            port = embedded.port
            assert embedded.restart() == 0
            assert embedded.port == port
            assert api.fwdbwd(model, 3, DATA)["metrics"]["loss:sum"] > 0  # restored
            assert embedded.restart(graceful=False) != 0
            assert api.post("/optim_step", {"model_id": model, "seq_id": 4}).status_code == 410
            assert embedded.restart(keep_state=False) == 0
            assert embedded.port == port
            assert api.post("/session_heartbeat", {"session_id": session}).status_code == 404
            assert api.post("/optim_step", {"model_id": model, "seq_id": 4}).status_code == 404
        finally:
            api.close()
    mine = EmbeddedServer("null", data_dir=tmp_path / "mine")
    try:
        mine.start()
        with pytest.raises(EmbeddedServerError, match="data_dir=None"):
            mine.restart(keep_state=False)
        assert mine.running  # refused before stopping anything
    finally:
        mine.close()
    assert (tmp_path / "mine" / "server.db").is_file()
