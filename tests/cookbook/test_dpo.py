"""The cookbook's DPO loop (forward_backward_custom against a reference sampler) on
comparisons built from its example conversations."""

from __future__ import annotations

import itertools
import json
import math
from importlib import resources

from tinker_cookbook.preference import train_dpo
from tinker_cookbook.preference.dpo_datasets import DPODatasetBuilderFromComparisons
from tinker_cookbook.preference.preference_datasets import ComparisonBuilderFromJsonl
from tinker_cookbook.supervised.types import ChatDatasetBuilderCommonConfig

from .conftest import MODEL, RENDERER, Cookbook

CONVERSATIONS = resources.files("tinker_cookbook") / "example_data" / "conversations.jsonl"
STEPS = 2


def _comparisons(count: int) -> list[dict[str, object]]:
    """Prompt + the conversation's own answer (chosen) vs the next one's answer (rejected)."""
    convos = [json.loads(line)["messages"] for line in CONVERSATIONS.read_text().splitlines()]
    pairs = [c for c in convos if len(c) == 2 and c[0]["role"] == "user"][: count + 1]
    return [
        {
            "comparison": {
                "prompt_conversation": [first[0]],
                "completion_A": [first[1]],
                "completion_B": [second[1]],
            },
            "label": "A",
        }
        for first, second in itertools.pairwise(pairs)
    ]


def test_dpo_loop(cookbook: Cookbook) -> None:
    data = cookbook.log_root / "comparisons.jsonl"
    data.write_text("\n".join(json.dumps(c) for c in _comparisons(2 * STEPS)) + "\n")
    log_path = cookbook.log_root / "dpo"
    config = train_dpo.Config(
        log_path=str(log_path),
        model_name=MODEL,
        recipe_name="tinkex_test_dpo",
        renderer_name=RENDERER,
        dataset_builder=DPODatasetBuilderFromComparisons(
            comparison_builder=ComparisonBuilderFromJsonl(train_path=str(data)),
            common_config=ChatDatasetBuilderCommonConfig(
                model_name_for_tokenizer=MODEL,
                renderer_name=RENDERER,
                max_length=96,
                batch_size=2,
            ),
        ),
        learning_rate=1e-3,
        lora_rank=4,
        base_url=cookbook.base_url,
        save_every=0,
        eval_every=0,
        max_steps=STEPS,
    )
    train_dpo.main(config)
    metrics = [json.loads(line) for line in (log_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(STEPS))
    first, last = metrics[0], metrics[-1]
    # Before any update the policy is the reference: no margin, the loss is log 2.
    assert math.isclose(first["dpo_loss"], math.log(2), abs_tol=1e-4)
    assert abs(first["margin"]) < 1e-4
    # After one, the policy moved away from the reference sampler's frozen weights.
    assert abs(last["chosen_reward"]) + abs(last["rejected_reward"]) > 1e-3
