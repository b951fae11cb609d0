"""Optimizer families over HTTP: the official SDK 0.38 creates Dimuon models, steps them,
checkpoints and restores them; the other family's parameters and unknown configs are 400s."""

from __future__ import annotations

import itertools

import pytest
import tinker
from _servers import ServerHandle
from tinker import types

from ._helpers import MODEL, Api
from ._sdk import ce_datum, rest_client, service_client

DATA = [ce_datum([2 + i, 7 + i, 11 + i, 19 + i, 23 + i, 29 + i]) for i in range(3)]
DIMUON = types.DimuonParams(learning_rate=1e-3)


def _losses(training: tinker.TrainingClient, steps: int, params: object = DIMUON) -> list[float]:
    losses = []
    for _ in range(steps):
        step = training.forward_backward(DATA, "cross_entropy")
        optim = training.optim_step(params)  # type: ignore[arg-type]
        losses.append(step.result().metrics["loss:sum"])
        assert "grad_norm:mean" in optim.result().metrics
    return losses


def test_official_sdk_trains_checkpoints_and_restores_dimuon(null_server: ServerHandle) -> None:
    with service_client(null_server) as service:
        training = service.create_lora_training_client(
            base_model=MODEL, rank=4, seed=3, optimizer=types.DimuonOptimizerConfig()
        ).result()
        info = training.get_info()
        assert info.optimizer_config.type == "dimuon"
        assert info.optimizer_config.model_dump() == {"type": "dimuon", "version": 1}
        losses = _losses(training, 4)
        assert all(b < a for a, b in itertools.pairwise(losses)), losses

        state = training.save_state("dimuon-state").result()
        weights = rest_client(null_server).get_weights_info_by_tinker_path(state.path).result()
        assert weights.optimizer_config.model_dump() == {"type": "dimuon", "version": 1}
        expected = _losses(training, 2)

        # Full-state restore keeps the family and the momentum: the same next losses.
        restored = service.create_training_client_from_state_with_optimizer(state.path).result()
        assert restored.get_info().optimizer_config.type == "dimuon"
        assert _losses(restored, 2) == expected
        # Weights only: the family is the caller's choice (AdamW by default).
        adamw = service.create_training_client_from_state(state.path).result()
        assert adamw.get_info().optimizer_config.type == "adamw"
        _losses(adamw, 1, types.AdamParams(learning_rate=1e-3))
        again = service.create_training_client_from_state(
            state.path, optimizer=types.DimuonOptimizerConfig()
        ).result()
        assert again.get_info().optimizer_config.type == "dimuon"

        # The other family's parameters are refused, naming both.
        with pytest.raises(tinker.BadRequestError) as info_error:
            training.optim_step(types.AdamParams(learning_rate=1e-3)).result()
        message = str(info_error.value)
        assert "dimuon" in message
        assert "AdamParams" in message
        with pytest.raises(tinker.BadRequestError, match="DimuonParams"):
            adamw.optim_step(DIMUON).result()


def test_optimizer_config_and_params_errors(api: Api) -> None:
    session = api.session()

    def create(config: object, seq: int) -> tuple[int, str]:
        reply = api.post(
            "/create_model",
            {
                "session_id": session,
                "model_seq_id": seq,
                "base_model": MODEL,
                "lora_config": {"rank": 4},
                "optimizer_config": config,
            },
        )
        return reply.status_code, reply.text

    for seq, (config, word) in enumerate(
        [
            ({"type": "lion"}, "lion"),
            ({"type": "dimuon", "version": 2}, "version"),
            ({"type": "adamw", "version": 1}, "version"),
            ({"type": "dimuon", "version": 1, "momentum": 0.9}, "momentum"),
        ]
    ):
        status, text = create(config, seq)
        assert status == 400, text
        assert word in text
    status, _ = create({"type": "dimuon", "version": 1}, 10)
    assert status == 200
    model_id = f"{session}:train:10"
    info = api.ok("/get_info", {"model_id": model_id})
    assert info["optimizer_config"] == {"type": "dimuon", "version": 1}
    bad_steps = [
        ({"optimizer_params": {"type": "dimuon"}}, "learning_rate"),
        ({"optimizer_params": {"type": "dimuon", "learning_rate": -1.0}}, ">= 0"),
        ({"optimizer_params": {"type": "dimuon", "learning_rate": 1, "beta1": 1.0}}, "beta1"),
        ({"optimizer_params": {"type": "dimuon", "learning_rate": 1, "eps": 1.0}}, "eps"),
        ({"optimizer_params": {"type": "lion", "learning_rate": 1}}, "lion"),
        ({"adam_params": {"learning_rate": 1e-3}}, "AdamParams"),
        (
            {
                "adam_params": {"learning_rate": 1e-3},
                "optimizer_params": {"type": "dimuon", "learning_rate": 1},
            },
            "not both",
        ),
    ]
    for extra, word in bad_steps:
        reply = api.post("/optim_step", {"model_id": model_id, "seq_id": 1, **extra})
        assert reply.status_code == 400, reply.text
        assert word in reply.json()["detail"], (word, reply.json())
    # Nothing consumed seq_id 1.
    ok = {"type": "dimuon", "learning_rate": 0.01}
    out = api.result(
        api.ok("/optim_step", {"model_id": model_id, "seq_id": 1, "optimizer_params": ok})
    )
    assert "grad_norm:mean" in out["metrics"]


@pytest.mark.torch
def test_official_sdk_dimuon_on_the_torch_engine(torch_server: ServerHandle) -> None:
    with service_client(torch_server) as service:
        training = service.create_lora_training_client(
            base_model=MODEL, rank=8, seed=0, optimizer=types.DimuonOptimizerConfig()
        ).result()
        losses = _losses(training, 8, types.DimuonParams(learning_rate=0.03))
        assert losses[-1] < 0.7 * losses[0], losses
