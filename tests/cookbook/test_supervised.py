"""The cookbook's supervised loop on its own example conversations, then resumed from its
checkpoint, against the torch server."""

from __future__ import annotations

import asyncio
import json
from importlib import resources

import tinker
from tinker_cookbook import checkpoint_utils
from tinker_cookbook.supervised import train
from tinker_cookbook.supervised.data import FromConversationFileBuilder
from tinker_cookbook.supervised.types import ChatDatasetBuilderCommonConfig

from .conftest import MODEL, RENDERER, Cookbook

CONVERSATIONS = resources.files("tinker_cookbook") / "example_data" / "conversations.jsonl"


def _config(cookbook: Cookbook, max_steps: int) -> train.Config:
    common = ChatDatasetBuilderCommonConfig(
        model_name_for_tokenizer=MODEL,
        renderer_name=RENDERER,
        max_length=96,
        batch_size=8,
    )
    return train.Config(
        log_path=str(cookbook.log_root / "sl"),
        model_name=MODEL,
        recipe_name="tinkex_test_sl",
        renderer_name=RENDERER,
        dataset_builder=FromConversationFileBuilder(
            file_path=str(CONVERSATIONS), common_config=common
        ),
        learning_rate=1e-3,
        lora_rank=4,
        base_url=cookbook.base_url,
        save_every=2,
        eval_every=0,
        max_steps=max_steps,
    )


def _metrics(cookbook: Cookbook) -> list[dict[str, float]]:
    lines = (cookbook.log_root / "sl" / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_supervised_loop_trains_saves_and_resumes(cookbook: Cookbook) -> None:
    asyncio.run(train.main(_config(cookbook, max_steps=3)))
    steps = _metrics(cookbook)
    assert [m["step"] for m in steps] == [0, 1, 2]
    assert all(m["train_mean_nll"] > 0 for m in steps)
    record = checkpoint_utils.get_last_checkpoint(str(cookbook.log_root / "sl"))
    assert record is not None
    assert record.state_path is not None
    assert record.state_path.startswith("tinker://")

    # The checkpoints the loop saved are listed by the server.
    rest = tinker.RestClient(base_url=cookbook.base_url)
    run_id = record.state_path.removeprefix("tinker://").split("/")[0]
    listed = {c.tinker_path for c in rest.list_checkpoints(run_id).result().checkpoints}
    assert record.state_path in listed

    # As if the run had stopped before its final save: the next run on the same log directory
    # resumes from the periodic checkpoint (weights and optimizer state) and trains on.
    records = (cookbook.log_root / "sl" / "checkpoints.jsonl").read_text().splitlines()
    kept = [r for r in records if json.loads(r)["name"] != "final"]
    assert len(kept) == len(records) - 1
    (cookbook.log_root / "sl" / "checkpoints.jsonl").write_text("\n".join(kept) + "\n")
    periodic = json.loads(kept[-1])
    asyncio.run(train.main(_config(cookbook, max_steps=4)))
    resumed = _metrics(cookbook)
    assert [m["step"] for m in resumed] == [0, 1, 2, 3]
    # The loop state came back with the checkpoint; the run went on in a new training run
    # created from the saved state (weights and optimizer).
    trained = resumed[-1]["tokens/cumulative/trained"]
    assert trained > periodic["elapsed_tokens"]
    final = checkpoint_utils.get_last_checkpoint(str(cookbook.log_root / "sl"))
    assert final is not None
    assert final.state_path is not None
    assert not final.state_path.startswith(f"tinker://{run_id}/")
