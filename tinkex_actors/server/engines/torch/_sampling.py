"""Generation: prompt scoring, KV-cached decoding, temperature / top-k / top-p, stops.

Semantics (documented in ``docs/server-engine.md``):

* The prompt runs once; its KV cache is repeated for the ``num_samples`` rows, which then decode
  together, one token per step, reusing the cache.
* ``temperature`` 0 is greedy (argmax, lowest id on ties). Otherwise logits are divided by the
  temperature, cut to the ``top_k`` best (-1: no cut), then to the smallest set of best tokens
  whose probability reaches ``top_p``, and a token is drawn from what is left with a generator
  seeded by ``seed`` (a random seed when None): the same request and seed give the same tokens.
* A sequence's ``logprobs`` are the model's own log-probabilities of the drawn tokens (the
  distribution at temperature 1, before top-k / top-p): the numbers forward_backward computes
  for the same tokens (to float rounding), so importance ratios start at 1.
* Stops: a token in the stop set (EOS unless the stop list is explicitly empty, plus any stop
  token ids) ends a sequence with ``"stop"`` and is *included* in its tokens. A stop string
  ends it as soon as the decoded text of the generated tokens contains it; the tokens up to and
  including the one that completed it are returned (nothing is trimmed; decode and cut the text
  if you need it without the stop string). Otherwise the sequence ends after ``max_tokens`` with
  ``"length"``.
"""

from __future__ import annotations

import secrets
from typing import Any

import torch

from tinkex_actors.server.engine_api import (
    EngineUserError,
    SampledSeq,
    SampleResult,
    SampleSpec,
)
from tinkex_actors.server.engines.torch._base import BaseModel
from tinkex_actors.server.engines.torch._lora import LoraWeights

__all__ = ["generate"]

#: Decoded window (in tokens per stop-string character) checked for stop strings: a character
#: is at most 4 UTF-8 bytes and every byte-level token carries at least one byte.
_TOKENS_PER_CHAR = 4
_WINDOW_SLACK = 8


def _check(base: BaseModel, spec: SampleSpec) -> list[int]:
    info = base.info
    prompt = [int(t) for t in spec.prompt]
    if not prompt:
        raise EngineUserError("prompt: expected at least one token")
    bad = [t for t in prompt if not 0 <= t < info.vocab_size]
    if bad:
        raise EngineUserError(
            f"prompt: token id {bad[0]} is outside the vocabulary [0, {info.vocab_size})"
        )
    if spec.max_tokens < 1:
        raise EngineUserError(f"max_tokens: expected >= 1, got {spec.max_tokens}")
    if len(prompt) + spec.max_tokens > info.max_context_length:
        raise EngineUserError(
            f"prompt ({len(prompt)} tokens) + max_tokens ({spec.max_tokens}) exceeds the "
            f"context length {info.max_context_length}"
        )
    if spec.num_samples < 1:
        raise EngineUserError(f"num_samples: expected >= 1, got {spec.num_samples}")
    if spec.temperature < 0 or not spec.temperature == spec.temperature:
        raise EngineUserError(f"temperature: expected >= 0, got {spec.temperature}")
    if not 0 < spec.top_p <= 1:
        raise EngineUserError(f"top_p: expected a value in (0, 1], got {spec.top_p}")
    if spec.top_k != -1 and spec.top_k < 1:
        raise EngineUserError(f"top_k: expected -1 (no limit) or >= 1, got {spec.top_k}")
    if spec.topk_prompt_logprobs < 0:
        raise EngineUserError("topk_prompt_logprobs: expected >= 0")
    for token in spec.stop_token_ids or ():
        if not 0 <= token < info.vocab_size:
            raise EngineUserError(f"stop token id {token} is outside the vocabulary")
    if any(s == "" for s in spec.stop_strings or ()):
        raise EngineUserError("stop strings must not be empty")
    return prompt


def _pick(logits: Any, spec: SampleSpec, generator: Any) -> Any:
    """One token per row of ``logits`` ([rows, vocab], float32)."""
    if spec.temperature == 0:
        return logits.argmax(dim=-1)
    scaled = logits / spec.temperature
    vocab = scaled.shape[-1]
    if 0 < spec.top_k < vocab:
        values, indices = scaled.topk(spec.top_k, dim=-1)
        scaled = torch.full_like(scaled, float("-inf")).scatter(1, indices, values)
    if spec.top_p < 1.0:
        ordered, indices = scaled.sort(dim=-1, descending=True, stable=True)
        probs = torch.softmax(ordered, dim=-1)
        # Drop a token once the better ones already reach top_p (the best always stays).
        drop = (probs.cumsum(dim=-1) - probs) >= spec.top_p
        ordered = ordered.masked_fill(drop, float("-inf"))
        scaled = torch.full_like(scaled, float("-inf")).scatter(1, indices, ordered)
    probs = torch.softmax(scaled, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


class _Stops:
    def __init__(self, base: BaseModel, spec: SampleSpec) -> None:
        # An explicitly empty stop list (``stop=[]``) disables every stop, EOS included.
        explicit_empty = spec.stop_strings == () or spec.stop_token_ids == ()
        ids = set() if explicit_empty else set(base.info.eos_token_ids)
        ids.update(spec.stop_token_ids or ())
        self.ids = ids
        self.strings = tuple(spec.stop_strings or ())
        longest = max((len(s) for s in self.strings), default=0)
        self.window = longest * _TOKENS_PER_CHAR + _WINDOW_SLACK
        self.decode = base.decode

    def hit(self, tokens: list[int]) -> bool:
        if tokens[-1] in self.ids:
            return True
        if not self.strings:
            return False
        text = self.decode(tokens[-self.window :])
        return any(s in text for s in self.strings)


def _score_prompt(logits: Any, prompt: list[int], spec: SampleSpec, result: SampleResult) -> None:
    logp = torch.log_softmax(logits[0, :-1].float(), dim=-1)
    if spec.prompt_logprobs:
        picked = logp.gather(1, torch.tensor(prompt[1:]).unsqueeze(1)).squeeze(1).tolist()
        result.prompt_logprobs = [None, *(float(v) for v in picked)]
    if spec.topk_prompt_logprobs:
        k = min(spec.topk_prompt_logprobs, logp.shape[-1])
        values, indices = logp.topk(k, dim=-1)
        rows: list[list[tuple[int, float]] | None] = [None]
        for ids, vals in zip(indices.tolist(), values.tolist(), strict=True):
            rows.append([(int(i), float(v)) for i, v in zip(ids, vals, strict=True)])
        result.topk_prompt_logprobs = rows


def generate(base: BaseModel, weights: LoraWeights | None, spec: SampleSpec) -> SampleResult:
    """Run one sample request on ``base`` with ``weights`` (None: the bare base model)."""
    prompt = _check(base, spec)
    n = spec.num_samples
    generator = torch.Generator()
    generator.manual_seed(secrets.randbits(63) if spec.seed is None else spec.seed % (1 << 64))
    stops = _Stops(base, spec)
    result = SampleResult(sequences=[])
    score = spec.prompt_logprobs or spec.topk_prompt_logprobs > 0
    with torch.inference_mode(), base.router.use(weights):
        out = base.forward(torch.tensor([prompt]), use_cache=True, last_only=not score)
        if score:
            _score_prompt(out.logits, prompt, spec, result)
        cache = base.output_cache(out)
        if n > 1:
            cache.batch_repeat_interleave(n)
        logits = out.logits[:, -1, :].float().expand(n, -1)
        tokens: list[list[int]] = [[] for _ in range(n)]
        logprobs: list[list[float]] = [[] for _ in range(n)]
        finished = [False] * n
        for step in range(spec.max_tokens):
            chosen = _pick(logits, spec, generator)
            chosen_lp = torch.log_softmax(logits, dim=-1).gather(1, chosen.unsqueeze(1))
            for row, (token, lp) in enumerate(
                zip(chosen.tolist(), chosen_lp[:, 0].tolist(), strict=True)
            ):
                if finished[row]:
                    continue
                tokens[row].append(int(token))
                logprobs[row].append(float(lp))
                finished[row] = stops.hit(tokens[row])
            if all(finished) or step == spec.max_tokens - 1:
                break
            out = base.forward(chosen.unsqueeze(1), cache=cache, use_cache=True, last_only=True)
            cache = base.output_cache(out)
            logits = out.logits[:, -1, :].float()
    result.sequences = [
        SampledSeq(tokens=t, logprobs=lp, stop_reason="stop" if done else "length")
        for t, lp, done in zip(tokens, logprobs, finished, strict=True)
    ]
    return result
