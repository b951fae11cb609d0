"""forward_backward / optim_step of the torch engine: learning, determinism, isolation, AdamW."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from safetensors.numpy import load_file

from tinkex_actors.server.engine_api import (
    ADAPTER_WEIGHTS_FILE,
    AdamSpec,
    EngineDatum,
    LoraSpec,
)
from tinkex_actors.server.engines.torch_engine import TorchEngine

from ._util import BASE, ce_datum, dataset, rl_datum, sequence, uid

pytestmark = pytest.mark.torch

ADAM = AdamSpec(learning_rate=3e-3)


def train(
    engine: TorchEngine,
    model_id: str,
    data: list[EngineDatum],
    steps: int,
    adam: AdamSpec = ADAM,
) -> list[float]:
    losses = []
    for _ in range(steps):
        result = engine.forward_backward(model_id, data, "cross_entropy", {}, forward_only=False)
        losses.append(result.metrics["loss:sum"])
        engine.optim_step(model_id, adam)
    return losses


def logprobs(engine: TorchEngine, model_id: str, data: list[EngineDatum]) -> list[np.ndarray]:
    result = engine.forward_backward(model_id, data, "cross_entropy", {}, forward_only=True)
    return [out["logprobs"] for out in result.outputs]


def test_cross_entropy_loss_falls_over_20_steps(engine: TorchEngine, adapter: str) -> None:
    losses = train(engine, adapter, dataset(), 20)
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0]
    # Full-batch steps at a moderate learning rate: every step lowers the loss.
    assert all(b < a for a, b in itertools.pairwise(losses))


def test_outputs_shapes_and_loss_sum(engine: TorchEngine, adapter: str) -> None:
    data = [ce_datum(sequence(1, 9), weights=[1, 0, 2, 1, 1, 0, 1, 1, 3]), ce_datum(sequence(2, 4))]
    result = engine.forward_backward(adapter, data, "cross_entropy", {}, forward_only=True)
    assert [len(o["logprobs"]) for o in result.outputs] == [9, 4]
    for out in result.outputs:
        assert out["logprobs"].dtype == np.float32
        assert out["elementwise_loss"].dtype == np.float32
        assert (out["logprobs"] < 0).all()
    first = result.outputs[0]
    weights = np.array([1, 0, 2, 1, 1, 0, 1, 1, 3], dtype=np.float32)
    np.testing.assert_allclose(first["elementwise_loss"], -first["logprobs"] * weights, rtol=1e-6)
    total = sum(float(o["elementwise_loss"].astype(np.float64).sum()) for o in result.outputs)
    assert result.metrics["loss:sum"] == pytest.approx(total, rel=1e-6)
    assert set(result.metrics) == {"loss:sum"}
    assert result.loss_fn_output_type == "ArrayRecord"


def test_optional_inputs_default_per_datum(engine: TorchEngine, adapter: str) -> None:
    plain = ce_datum(sequence(5, 6))
    weighted = ce_datum(sequence(6, 4), weights=[2, 2, 2, 2])
    mixed = engine.forward_backward(
        adapter, [weighted, plain], "cross_entropy", {}, forward_only=True
    )
    alone = engine.forward_backward(adapter, [plain], "cross_entropy", {}, forward_only=True)
    np.testing.assert_allclose(
        mixed.outputs[1]["elementwise_loss"], alone.outputs[0]["elementwise_loss"], rtol=1e-5
    )
    np.testing.assert_allclose(
        mixed.outputs[0]["elementwise_loss"], -2 * mixed.outputs[0]["logprobs"], rtol=1e-6
    )


def test_padding_does_not_change_a_datums_logprobs(engine: TorchEngine, adapter: str) -> None:
    short = ce_datum(sequence(3, 5))
    alone = logprobs(engine, adapter, [short])[0]
    batched = logprobs(engine, adapter, [ce_datum(sequence(4, 30)), short])[1]
    np.testing.assert_allclose(alone, batched, atol=1e-5)


def test_same_seed_is_bit_identical_and_other_seeds_differ(
    engine: TorchEngine, new_id: list[str]
) -> None:
    a, b, c = uid(), uid(), uid()
    new_id.extend([a, b, c])
    engine.create_adapter(a, BASE, LoraSpec(rank=8, seed=123))
    engine.create_adapter(b, BASE, LoraSpec(rank=8, seed=123))
    engine.create_adapter(c, BASE, LoraSpec(rank=8, seed=124))
    data = dataset(seed=10)
    la, lb, lc = (train(engine, m, data, 4) for m in (a, b, c))
    assert la == lb  # exact, step by step
    assert la[0] == lc[0]  # B starts at zero: the first loss is the base model's
    assert la[1:] != lc[1:]


def test_none_seed_gives_random_initializations(engine: TorchEngine, new_id: list[str]) -> None:
    a, b = uid(), uid()
    new_id.extend([a, b])
    engine.create_adapter(a, BASE, LoraSpec(rank=4, seed=None))
    engine.create_adapter(b, BASE, LoraSpec(rank=4, seed=None))
    data = dataset(n=2, seed=20)
    assert train(engine, a, data, 2)[1] != train(engine, b, data, 2)[1]


def test_adapters_train_independently(engine: TorchEngine, new_id: list[str]) -> None:
    a, b = uid(), uid()
    new_id.extend([a, b])
    for name in (a, b):
        engine.create_adapter(name, BASE, LoraSpec(rank=8, seed=5))
    probe = dataset(n=2, seed=30)
    before = logprobs(engine, b, probe)
    train(engine, a, dataset(seed=40), 3)
    after = logprobs(engine, b, probe)
    for x, y in zip(before, after, strict=True):
        np.testing.assert_array_equal(x, y)
    changed = logprobs(engine, a, probe)
    assert not np.array_equal(changed[0], before[0])
    # Interleaved accumulation: b's pending gradient survives a's step.
    engine.forward_backward(b, probe, "cross_entropy", {}, forward_only=False)
    train(engine, a, probe, 1)
    engine.optim_step(b, ADAM)
    assert logprobs(engine, b, probe)[0].sum() > before[0].sum()


def test_forward_only_accumulates_nothing(engine: TorchEngine, adapter: str) -> None:
    data = dataset(n=2, seed=50)
    train(engine, adapter, data, 2)  # moves B off zero, so a gradient would change things
    before = logprobs(engine, adapter, data)
    engine.forward_backward(adapter, data, "cross_entropy", {}, forward_only=True)
    # Adam's momentum keeps moving the weights after a zero-gradient step, so compare with a
    # twin that did the same steps without the forward-only call.
    twin = uid()
    engine.create_adapter(twin, BASE, LoraSpec(rank=8, seed=7))
    try:
        train(engine, twin, data, 2)
        np.testing.assert_array_equal(before[0], logprobs(engine, twin, data)[0])
        engine.optim_step(adapter, ADAM)
        engine.optim_step(twin, ADAM)
        np.testing.assert_array_equal(
            logprobs(engine, adapter, data)[0], logprobs(engine, twin, data)[0]
        )
    finally:
        engine.drop_adapter(twin)


def test_gradients_accumulate_across_calls(engine: TorchEngine, new_id: list[str]) -> None:
    a, b = uid(), uid()
    new_id.extend([a, b])
    for name in (a, b):
        engine.create_adapter(name, BASE, LoraSpec(rank=8, seed=9))
    data = dataset(n=4, seed=60)
    sgd = AdamSpec(learning_rate=1e-2, beta1=0.0, beta2=0.0, eps=1e-8)
    for _ in range(2):
        engine.forward_backward(a, data[:2], "cross_entropy", {}, forward_only=False)
        engine.forward_backward(a, data[2:], "cross_entropy", {}, forward_only=False)
        engine.optim_step(a, sgd)
        engine.forward_backward(b, data, "cross_entropy", {}, forward_only=False)
        engine.optim_step(b, sgd)
    for x, y in zip(logprobs(engine, a, data), logprobs(engine, b, data), strict=True):
        np.testing.assert_allclose(x, y, atol=1e-4)


def _saved(engine: TorchEngine, model_id: str, tmp_path) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    directory = tmp_path / uid("ckpt")
    directory.mkdir()
    engine.save_sampler_weights(model_id, directory)
    return load_file(str(directory / ADAPTER_WEIGHTS_FILE))


def test_weight_decay_is_decoupled(engine: TorchEngine, adapter: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    before = _saved(engine, adapter, tmp_path)
    # No gradient accumulated: only the decoupled decay moves the weights.
    engine.optim_step(adapter, AdamSpec(learning_rate=0.1, weight_decay=0.5))
    after = _saved(engine, adapter, tmp_path)
    key = next(k for k in before if k.endswith("lora_A.weight"))
    np.testing.assert_allclose(after[key], before[key] * (1 - 0.1 * 0.5), rtol=1e-6)


def test_grad_clip_changes_the_trajectory(engine: TorchEngine, new_id: list[str]) -> None:
    a, b = uid(), uid()
    new_id.extend([a, b])
    for name in (a, b):
        engine.create_adapter(name, BASE, LoraSpec(rank=8, seed=11))
    data = dataset(n=2, seed=70)
    norms = []
    for _ in range(3):
        engine.forward_backward(a, data, "cross_entropy", {}, forward_only=False)
        norms.append(engine.optim_step(a, ADAM)["grad_norm:mean"])
        engine.forward_backward(b, data, "cross_entropy", {}, forward_only=False)
        clipped = engine.optim_step(b, AdamSpec(learning_rate=1e-2, grad_clip_norm=1e-3))
        assert clipped["grad_norm:mean"] > 1e-3  # reports the norm before clipping
    assert all(n > 0 for n in norms)
    assert not np.array_equal(logprobs(engine, a, data)[0], logprobs(engine, b, data)[0])


# ----------------------------------------------------------------------------- RL losses
def _rl_setup(engine: TorchEngine, model_id: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    tokens = sequence(seed, 8)
    current = logprobs(engine, model_id, [ce_datum(tokens)])[0]
    return tokens, current


@pytest.mark.parametrize(
    "loss_fn", ["importance_sampling", "ppo", "cispo", "dro", "gspo", "stable_reinforce"]
)
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_rl_losses_move_logprobs_with_the_advantage(
    engine: TorchEngine, adapter: str, loss_fn: str, sign: float
) -> None:
    train(engine, adapter, dataset(n=1, seed=80), 1)  # leave the all-zero B start
    tokens, current = _rl_setup(engine, adapter, 81)
    datum = rl_datum(tokens, current, np.full(8, sign, dtype=np.float32))
    step = AdamSpec(learning_rate=1e-3)
    result = engine.forward_backward(adapter, [datum], loss_fn, {}, forward_only=False)
    assert np.isfinite(result.metrics["loss:sum"])
    engine.optim_step(adapter, step)
    after = logprobs(engine, adapter, [ce_datum(tokens)])[0]
    assert sign * (after.sum() - current.sum()) > 0


def test_rl_loss_values(engine: TorchEngine, adapter: str) -> None:
    tokens, lp = _rl_setup(engine, adapter, 90)
    old = lp - np.array([1.0, -1.0, 0.1, 0.0, 2.0, -2.0, 0.05, -0.05], dtype=np.float32)
    adv = np.array([1.0, 1.0, -1.0, 0.5, -0.5, 2.0, 1.0, -1.0], dtype=np.float32)
    datum = rl_datum(tokens, old, adv)
    ratio = np.exp(lp.astype(np.float64) - old)

    def run(loss_fn: str, config: dict[str, float] | None = None) -> np.ndarray:
        out = engine.forward_backward(adapter, [datum], loss_fn, config or {}, forward_only=True)
        return out.outputs[0]["elementwise_loss"].astype(np.float64)

    np.testing.assert_allclose(run("importance_sampling"), -ratio * adv, rtol=1e-5)
    ppo = -np.minimum(ratio * adv, np.clip(ratio, 0.8, 1.2) * adv)
    np.testing.assert_allclose(run("ppo"), ppo, rtol=1e-5)
    ppo_wide = -np.minimum(ratio * adv, np.clip(ratio, 0.5, 3.0) * adv)
    config = {"clip_low_threshold": 0.5, "clip_high_threshold": 3.0}
    np.testing.assert_allclose(run("ppo", config), ppo_wide, rtol=1e-5)
    cispo = -np.clip(ratio, 0.0, 4.0) * adv * lp
    np.testing.assert_allclose(run("cispo"), cispo, rtol=1e-5)
    dro = -adv * lp + 0.5 * 2.0 * (lp - old) ** 2
    np.testing.assert_allclose(run("dro", {"beta": 2.0}), dro, rtol=1e-5)


def test_ppo_clipped_tokens_get_no_gradient(engine: TorchEngine, adapter: str) -> None:
    train(engine, adapter, dataset(n=1, seed=95), 1)
    tokens, lp = _rl_setup(engine, adapter, 96)
    # ratio = e > 1.2 with a positive advantage: the clipped branch is active everywhere.
    datum = rl_datum(tokens, lp - 1.0, np.ones(8, dtype=np.float32))
    out = engine.forward_backward(adapter, [datum], "ppo", {}, forward_only=False)
    np.testing.assert_allclose(out.outputs[0]["elementwise_loss"], -1.2, rtol=1e-6)
    twin = uid()
    engine.create_adapter(twin, BASE, LoraSpec(rank=8, seed=7))
    try:
        train(engine, twin, dataset(n=1, seed=95), 1)
        engine.optim_step(adapter, ADAM)
        engine.optim_step(twin, ADAM)  # zero gradient: same Adam momentum step
        np.testing.assert_array_equal(
            logprobs(engine, adapter, [ce_datum(tokens)])[0],
            logprobs(engine, twin, [ce_datum(tokens)])[0],
        )
    finally:
        engine.drop_adapter(twin)


def test_per_token_clip_thresholds(engine: TorchEngine, adapter: str) -> None:
    tokens, lp = _rl_setup(engine, adapter, 97)
    datum = rl_datum(tokens, lp - 1.0, np.ones(8, dtype=np.float32))
    datum.inputs["clip_low_threshold"] = np.full(8, 0.5, dtype=np.float32)
    datum.inputs["clip_high_threshold"] = np.linspace(1.0, 2.0, 8).astype(np.float32)
    out = engine.forward_backward(adapter, [datum], "ppo", {}, forward_only=True)
    np.testing.assert_allclose(
        out.outputs[0]["elementwise_loss"], -np.linspace(1.0, 2.0, 8), rtol=1e-5
    )
