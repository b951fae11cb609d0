"""Sampling with the torch engine: every SampleSpec option, stops, scores, snapshots."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from tinkex_actors.server.engine_api import (
    AdamSpec,
    EngineNotFoundError,
    LoraSpec,
    SampleSpec,
)
from tinkex_actors.server.engines.torch_engine import TorchEngine

from ._util import BASE, EOS, ce_datum, greedy, uid

pytestmark = pytest.mark.torch

PROMPT = [403, 293, 267, 926, 262]  # "The capital of France is"


@pytest.fixture
def base_sampler(engine: TorchEngine) -> Iterator[str]:
    sampler_id = uid("s")
    engine.create_sampler(sampler_id, BASE)
    yield sampler_id
    engine.drop_sampler(sampler_id)


@pytest.fixture(scope="module")
def eos_sampler(engine: TorchEngine) -> Iterator[str]:
    """A sampler whose adapter learned to answer PROMPT with two tokens and EOS."""
    model_id, sampler_id = uid(), uid("s")
    engine.create_adapter(model_id, BASE, LoraSpec(rank=8, seed=3))
    datum = ce_datum([*PROMPT, 1502, 16, EOS], weights=[0, 0, 0, 0, 1, 1, 1])
    for _ in range(15):
        engine.forward_backward(model_id, [datum], "cross_entropy", {}, forward_only=False)
        engine.optim_step(model_id, AdamSpec(learning_rate=5e-3))
    engine.create_sampler(sampler_id, BASE, from_model_id=model_id)
    engine.drop_adapter(model_id)
    yield sampler_id
    engine.drop_sampler(sampler_id)


def tokens(engine: TorchEngine, sampler: str, spec: SampleSpec) -> list[list[int]]:
    return [s.tokens for s in engine.sample(sampler, spec).sequences]


def test_greedy_is_argmax_of_the_prompt_scores(engine: TorchEngine, base_sampler: str) -> None:
    out = engine.sample(base_sampler, greedy(PROMPT, 6, topk_prompt_logprobs=1))
    seq = out.sequences[0]
    assert len(seq.tokens) == 6
    assert seq.stop_reason == "length"
    # Each greedy token is the top-1 continuation when the sequence is scored as a prompt.
    scored = engine.sample(base_sampler, greedy([*PROMPT, *seq.tokens], 1, topk_prompt_logprobs=1))
    rows = scored.topk_prompt_logprobs
    assert rows is not None
    assert [row[0][0] for row in rows[len(PROMPT) :]] == seq.tokens  # type: ignore[index]


def test_sampled_logprobs_are_the_models(engine: TorchEngine, base_sampler: str) -> None:
    spec = SampleSpec(
        prompt=PROMPT, max_tokens=5, temperature=0.7, top_k=50, seed=4, stop_strings=()
    )
    seq = engine.sample(base_sampler, spec).sequences[0]
    scored = engine.sample(base_sampler, greedy([*PROMPT, *seq.tokens], 1, prompt_logprobs=True))
    assert scored.prompt_logprobs is not None
    np.testing.assert_allclose(seq.logprobs, scored.prompt_logprobs[len(PROMPT) :], atol=1e-5)


def test_seed_reproduces_and_distinguishes(engine: TorchEngine, base_sampler: str) -> None:
    def run(seed: int | None) -> list[list[int]]:
        spec = SampleSpec(prompt=PROMPT, max_tokens=12, num_samples=2, seed=seed, stop_strings=())
        return tokens(engine, base_sampler, spec)

    first = run(1)
    assert run(1) == first
    assert run(2) != first
    assert first[0] != first[1]  # the samples of one request differ from each other
    assert run(None) != run(None)


def test_num_samples_and_max_tokens(engine: TorchEngine, base_sampler: str) -> None:
    spec = SampleSpec(prompt=PROMPT, max_tokens=7, num_samples=3, seed=0, stop_strings=())
    out = engine.sample(base_sampler, spec)
    assert len(out.sequences) == 3
    for seq in out.sequences:
        assert len(seq.tokens) == len(seq.logprobs) == 7
        assert seq.stop_reason == "length"
        assert all(lp <= 0 for lp in seq.logprobs)


def test_top_k_one_and_tiny_top_p_are_greedy(engine: TorchEngine, base_sampler: str) -> None:
    expected = tokens(engine, base_sampler, greedy(PROMPT, 8))
    for options in ({"top_k": 1}, {"top_p": 1e-6}):
        spec = SampleSpec(
            prompt=PROMPT, max_tokens=8, temperature=1.5, seed=9, stop_strings=(), **options
        )  # type: ignore[arg-type]
        assert tokens(engine, base_sampler, spec) == expected


def test_top_k_limits_the_choices(engine: TorchEngine, base_sampler: str) -> None:
    top = engine.sample(base_sampler, greedy(PROMPT, 1, topk_prompt_logprobs=3))
    scored = engine.sample(base_sampler, greedy([*PROMPT, 0], 1, topk_prompt_logprobs=3))
    rows = scored.topk_prompt_logprobs
    assert top.sequences
    assert rows is not None
    allowed = {token for token, _ in rows[len(PROMPT)]}  # type: ignore[union-attr]
    spec = SampleSpec(
        prompt=PROMPT,
        max_tokens=1,
        num_samples=40,
        temperature=5.0,
        top_k=3,
        seed=1,
        stop_strings=(),
    )
    drawn = {seq.tokens[0] for seq in engine.sample(base_sampler, spec).sequences}
    assert drawn <= allowed
    assert len(drawn) > 1


def test_prompt_logprobs_match_forward(engine: TorchEngine, new_id: list[str]) -> None:
    model_id, sampler_id = uid(), uid("s")
    new_id.extend([model_id, sampler_id])
    engine.create_adapter(model_id, BASE, LoraSpec(rank=4, seed=1))
    datum = ce_datum([*PROMPT, 1502, 16])
    engine.forward_backward(model_id, [datum], "cross_entropy", {}, forward_only=False)
    engine.optim_step(model_id, AdamSpec(learning_rate=1e-2))
    engine.create_sampler(sampler_id, BASE, from_model_id=model_id)
    forward = engine.forward_backward(model_id, [datum], "cross_entropy", {}, forward_only=True)
    spec = greedy([*PROMPT, 1502, 16], 1, prompt_logprobs=True, topk_prompt_logprobs=4)
    out = engine.sample(sampler_id, spec)
    assert out.prompt_logprobs is not None
    assert out.topk_prompt_logprobs is not None
    assert out.prompt_logprobs[0] is None
    assert out.topk_prompt_logprobs[0] is None
    np.testing.assert_allclose(out.prompt_logprobs[1:], forward.outputs[0]["logprobs"], atol=1e-5)
    for row, actual in zip(out.topk_prompt_logprobs[1:], out.prompt_logprobs[1:], strict=True):
        assert row is not None
        assert len(row) == 4
        values = [v for _, v in row]
        assert values == sorted(values, reverse=True)
        assert actual is not None
        assert actual <= values[0] + 1e-6


def test_snapshot_ignores_later_training_and_fresh_adapter_equals_base(
    engine: TorchEngine, base_sampler: str, new_id: list[str]
) -> None:
    model_id, before = uid(), uid("s")
    new_id.extend([model_id, before])
    engine.create_adapter(model_id, BASE, LoraSpec(rank=8, seed=2))
    engine.create_sampler(before, BASE, from_model_id=model_id)
    spec = greedy(PROMPT, 8)
    assert tokens(engine, before, spec) == tokens(engine, base_sampler, spec)
    datum = ce_datum([*PROMPT, 7, 8, 9], weights=[0, 0, 0, 0, 1, 1, 1])
    for _ in range(15):
        engine.forward_backward(model_id, [datum], "cross_entropy", {}, forward_only=False)
        engine.optim_step(model_id, AdamSpec(learning_rate=5e-3))
    after = uid("s")
    new_id.append(after)
    engine.create_sampler(after, BASE, from_model_id=model_id)
    assert tokens(engine, before, spec) == tokens(engine, base_sampler, spec)
    assert tokens(engine, after, spec)[0][:3] == [7, 8, 9]


def test_eos_stops_unless_the_stop_list_is_empty(engine: TorchEngine, eos_sampler: str) -> None:
    stopped = engine.sample(eos_sampler, greedy(PROMPT, 10, stop_strings=None)).sequences[0]
    assert stopped.tokens == [1502, 16, EOS]
    assert stopped.stop_reason == "stop"
    running = engine.sample(eos_sampler, greedy(PROMPT, 10, stop_strings=())).sequences[0]
    assert running.tokens[:3] == [1502, 16, EOS]
    assert len(running.tokens) == 10
    assert running.stop_reason == "length"
    # Stop token ids add to EOS; an explicitly empty list of ids disables EOS too.
    by_id = engine.sample(eos_sampler, greedy(PROMPT, 10, stop_strings=None, stop_token_ids=(16,)))
    assert by_id.sequences[0].tokens == [1502, 16]
    none = engine.sample(eos_sampler, greedy(PROMPT, 10, stop_strings=None, stop_token_ids=()))
    assert len(none.sequences[0].tokens) == 10
    # EOS also ends a sequence that has stop strings which never match.
    strings = engine.sample(eos_sampler, greedy(PROMPT, 10, stop_strings=("zzz",))).sequences[0]
    assert strings.tokens == [1502, 16, EOS]
    assert strings.stop_reason == "stop"


@pytest.fixture(scope="module")
def decode(engine_dirs: tuple[Path, Path]) -> Callable[[list[int]], str]:
    """The default model's tokenizer, loaded from the hub cache as a user would."""
    from huggingface_hub import hf_hub_download
    from tokenizers import Tokenizer

    path = hf_hub_download(
        BASE, "tokenizer.json", cache_dir=str(engine_dirs[1]), local_files_only=True
    )
    tokenizer = Tokenizer.from_file(path)
    return lambda ids: str(tokenizer.decode(ids, skip_special_tokens=False))


def test_stop_strings_cut_after_the_completing_token(
    engine: TorchEngine, base_sampler: str, decode: Callable[[list[int]], str]
) -> None:
    full = tokens(engine, base_sampler, greedy(PROMPT, 12))[0]
    decoded = [decode(full[: i + 1]) for i in range(len(full))]
    # A stop string that ends inside the text of the 6th generated token.
    text = decoded[5]
    stop = text[-3:] if len(text) >= 3 else text
    first = next(i for i, t in enumerate(decoded) if stop in t)
    seq = engine.sample(
        base_sampler, greedy(PROMPT, 12, stop_strings=(stop, "never-there"))
    ).sequences[0]
    assert seq.stop_reason == "stop"
    assert seq.tokens == full[: first + 1]
    assert stop in decode(seq.tokens)
    assert stop not in decode(seq.tokens[:-1])


def test_unknown_sampler(engine: TorchEngine) -> None:
    with pytest.raises(EngineNotFoundError):
        engine.sample("no-such-sampler", greedy(PROMPT, 1))
