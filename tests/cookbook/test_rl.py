"""The cookbook's RL loop on its ArithmeticEnv, with each policy-gradient loss it offers.

``stable_reinforce`` needs the server to record per-sequence stability information when
sampling and to implement the loss (engine work done in parallel); ``importance_sampling``
works on the torch engine as it is.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from tinker_cookbook.recipes.math_rl.arithmetic_env import ArithmeticDatasetBuilder
from tinker_cookbook.rl import train

from .conftest import MODEL, RENDERER, Cookbook

STEPS = 2


@pytest.mark.parametrize("loss_fn", ["importance_sampling", "stable_reinforce"])
def test_rl_loop_on_arithmetic(cookbook: Cookbook, loss_fn: str) -> None:
    log_path = cookbook.log_root / f"rl-{loss_fn}"
    config = train.Config(
        learning_rate=1e-3,
        dataset_builder=ArithmeticDatasetBuilder(
            batch_size=2,
            group_size=2,
            model_name_for_tokenizer=MODEL,
            renderer_name=RENDERER,
            n_batches=STEPS,
        ),
        model_name=MODEL,
        recipe_name="tinkex_test_rl",
        renderer_name=RENDERER,
        max_tokens=8,
        log_path=str(log_path),
        loss_fn=loss_fn,  # type: ignore[arg-type]
        lora_rank=4,
        base_url=cookbook.base_url,
        eval_every=0,
        save_every=0,
        num_groups_to_log=0,
        rollout_json_export=False,
    )
    asyncio.run(train.main(config))
    metrics = [json.loads(line) for line in (log_path / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in metrics if "optim/entropy" in m]
    assert [m["step"] for m in steps] == list(range(STEPS))
    for step in steps:
        assert step["tokens/sampled"] > 0
        assert step["env/all/total_episodes"] == 4
        # The sampler's logprobs of the sampled tokens match the trainer's on the same weights.
        assert abs(step["optim/kl_sample_train_v1"]) < 1e-3
    assert metrics[-1]["tokens/cumulative/trained"] > 0
