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
* Also on request: the ``k`` most likely tokens (with logprobs) at every generated position
  (``topk_sample_logprobs``); the logprobs of given token ids at prompt positions 1..
  (``target_prompt_logprobs``, 0.0 where the id is -1); and ``k`` independent draws at the
  request's temperature (no top-k / top-p cut) at every prompt position after the first, with
  their temperature-1 logprobs (``prompt_alt_tokens_k``; drawn from a generator of their own,
  so asking for them leaves the sampled sequences unchanged).
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
#: Seed offset between a request's independent random streams (sampling, alternative draws).
_STREAM_STRIDE = 0x9E3779B97F4A7C15


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
    for name in ("topk_prompt_logprobs", "topk_sample_logprobs", "prompt_alt_tokens_k"):
        if getattr(spec, name) < 0:
            raise EngineUserError(f"{name}: expected >= 0")
    targets = spec.target_prompt_logprobs
    if targets is not None and (
        targets.ndim != 2
        or targets.shape[0] != len(prompt) - 1
        or (targets.size and (int(targets.min()) < -1 or int(targets.max()) >= info.vocab_size))
    ):
        raise EngineUserError(
            f"target_prompt_logprobs: expected token ids in [-1, {info.vocab_size}) of shape "
            f"[{len(prompt) - 1}, K]"
        )
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


def _generator(seed: int | None, stream: int) -> Any:
    """A generator for ``seed`` (random when None); ``stream`` separates independent uses."""
    generator = torch.Generator()
    base = secrets.randbits(63) if seed is None else seed
    generator.manual_seed((base + stream * _STREAM_STRIDE) % (1 << 64))
    return generator


def _score_prompt(logits: Any, prompt: list[int], spec: SampleSpec, result: SampleResult) -> None:
    logp = torch.log_softmax(logits[0, :-1].float(), dim=-1)
    if spec.target_prompt_logprobs is not None:
        ids = torch.from_numpy(spec.target_prompt_logprobs.astype("int64"))
        picked = logp.gather(1, ids.clamp(min=0))
        result.target_prompt_logprobs = torch.where(ids >= 0, picked, 0.0).numpy()
    if spec.prompt_alt_tokens_k:
        k = spec.prompt_alt_tokens_k
        if spec.temperature == 0:
            tokens = logp.argmax(dim=-1, keepdim=True).expand(-1, k)
        else:
            probs = torch.softmax(logits[0, :-1].float() / spec.temperature, dim=-1)
            tokens = torch.multinomial(
                probs, k, replacement=True, generator=_generator(spec.seed, 1)
            )
        result.prompt_alt_tokens = (
            tokens.contiguous().numpy().astype("int64"),
            logp.gather(1, tokens).numpy().astype("float32"),
        )
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
    generator = _generator(spec.seed, 0)
    stops = _Stops(base, spec)
    result = SampleResult(sequences=[])
    score = (
        spec.prompt_logprobs
        or spec.topk_prompt_logprobs > 0
        or spec.target_prompt_logprobs is not None
        or spec.prompt_alt_tokens_k > 0
    )
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
        k = min(spec.topk_sample_logprobs, logits.shape[-1])
        topk: list[list[list[tuple[int, float]]]] | None = [[] for _ in range(n)] if k else None
        finished = [False] * n
        for step in range(spec.max_tokens):
            chosen = _pick(logits, spec, generator)
            log_probs = torch.log_softmax(logits, dim=-1)
            chosen_lp = log_probs.gather(1, chosen.unsqueeze(1))
            best = log_probs.topk(k, dim=-1) if topk is not None else None
            for row, (token, lp) in enumerate(
                zip(chosen.tolist(), chosen_lp[:, 0].tolist(), strict=True)
            ):
                if finished[row]:
                    continue
                tokens[row].append(int(token))
                logprobs[row].append(float(lp))
                if topk is not None and best is not None:
                    ids, values = best.indices[row].tolist(), best.values[row].tolist()
                    topk[row].append(list(zip(ids, values, strict=True)))
                finished[row] = stops.hit(tokens[row])
            if all(finished) or step == spec.max_tokens - 1:
                break
            out = base.forward(chosen.unsqueeze(1), cache=cache, use_cache=True, last_only=True)
            cache = base.output_cache(out)
            logits = out.logits[:, -1, :].float()
    result.sequences = [
        SampledSeq(
            tokens=t,
            logprobs=lp,
            stop_reason="stop" if done else "length",
            topk_logprobs=None if topk is None else topk[row],
        )
        for row, (t, lp, done) in enumerate(zip(tokens, logprobs, finished, strict=True))
    ]
    return result
