"""forward_backward_custom on the torch engine: cross-entropy written as a custom loss trains
two same-seed models to the same weights as the built-in loss (real LoRA gradients)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _servers import ServerHandle

from tinkex_actors import Config, ServiceClient, types

from .conftest import BASE_MODEL, datum

pytestmark = pytest.mark.torch

SEQUENCES = [
    [5, 17, 33, 80, 120, 7, 64, 99, 250, 31, 12, 300],
    [44, 9, 18, 27, 36, 45, 54, 63, 72, 81, 90, 99],
    [400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411],
]
DATA = [datum(s, [0.0] * 3 + [1.0] * 8) for s in SEQUENCES]
ADAM = types.AdamParams(learning_rate=5e-3)
WAIT = 120


def cross_entropy(
    data: list[types.Datum], logprobs: list[torch.Tensor]
) -> tuple[torch.Tensor, dict[str, float]]:
    weights = [torch.tensor(d.loss_fn_inputs["weights"].to_list()) for d in data]
    loss = torch.stack([-(w * lp).sum() for w, lp in zip(weights, logprobs, strict=True)]).sum()
    return loss, {}


def _logprobs(output: types.ForwardBackwardOutput) -> np.ndarray:
    return np.concatenate([o["logprobs"].to_numpy() for o in output.loss_fn_outputs])


def test_custom_cross_entropy_gives_the_builtin_gradients_and_weights(
    torch_server: ServerHandle,
) -> None:
    config = Config(api_key=torch_server.api_key, base_url=torch_server.base_url)
    with ServiceClient(config) as service:
        lora = types.LoraConfig(rank=8, seed=0)
        builtin = service.create_lora_training_client(BASE_MODEL, lora, timeout=WAIT)
        custom = service.create_lora_training_client(BASE_MODEL, lora, timeout=WAIT)
        before = _logprobs(builtin.forward(DATA, "cross_entropy").result(timeout=WAIT))
        for _ in range(2):
            want = builtin.forward_backward(DATA, "cross_entropy")
            want_step = builtin.optim_step(ADAM)
            have = custom.forward_backward_custom(DATA, cross_entropy)
            have_step = custom.optim_step(ADAM)  # applies after the custom call's 2nd pass
            a, b = want.result(timeout=WAIT), have.result(timeout=WAIT)
            assert b.metrics["loss:sum"] == pytest.approx(a.metrics["loss:sum"], rel=1e-5)
            assert b.metrics["surrogate_loss:sum"] == pytest.approx(a.metrics["loss:sum"], rel=1e-5)
            np.testing.assert_allclose(_logprobs(b), _logprobs(a), rtol=1e-5, atol=1e-5)
            # Same gradients: the same global norm before each step.
            norm_a = (want_step.result(timeout=WAIT).metrics or {})["grad_norm:mean"]
            norm_b = (have_step.result(timeout=WAIT).metrics or {})["grad_norm:mean"]
            assert norm_a > 0
            assert norm_b == pytest.approx(norm_a, rel=1e-4)
        # Same weights after the steps: the same logprobs, which moved away from the start.
        after_a = _logprobs(builtin.forward(DATA, "cross_entropy").result(timeout=WAIT))
        after_b = _logprobs(custom.forward(DATA, "cross_entropy").result(timeout=WAIT))
        np.testing.assert_allclose(after_b, after_a, rtol=1e-4, atol=1e-5)
        assert np.abs(after_a - before).max() > 1e-2
