"""Sampling of the null engine: a fixed pseudo-random next-token distribution, no model.

After token ``t`` the next-token log-probabilities are one fixed vector, rotated by
``shift(t)``: sorting, normalizing and the temperature / top_k / top_p cut are done once (and
once per sampling setting), so a sampled token costs one draw, not a pass over the
vocabulary. The same seed gives the same tokens. Every 0.38 sampling field is served from the
same distribution: prompt logprobs and top-k, top-k logprobs of each generated token, logprobs
of requested target ids, and alternative draws at every prompt position.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from tinkex_actors.server.engine_api import SampledSeq, SampleResult, SampleSpec

__all__ = ["NullSampler"]

_EOS_PENALTY = 8.0
#: Sampling settings whose cumulative rank-order probabilities are kept (a handful in practice).
_MAX_CUTS = 64
_SHIFT_PRIME = 7919


class NullSampler:
    """The simulated next-token distribution of a vocabulary of ``vocab_size`` with ``eos``."""

    def __init__(self, vocab_size: int, eos: int) -> None:
        self._vocab = vocab_size
        logits = np.random.default_rng(20240601).normal(0.0, 2.0, size=vocab_size)
        logits[eos] -= _EOS_PENALTY
        shifted = logits - logits.max()
        self._base = shifted - math.log(float(np.exp(shifted).sum()))
        self._order = np.argsort(-self._base, kind="stable")
        self._cuts: dict[tuple[float, int, float], npt.NDArray[np.float64]] = {}

    def _shift(self, previous: int) -> int:
        return (previous * _SHIFT_PRIME) % self._vocab

    def _cdf(self, temperature: float, top_k: int, top_p: float) -> npt.NDArray[np.float64]:
        """Cumulative probabilities of the tokens in rank order after temperature and cuts."""
        key = (temperature, top_k, top_p)
        cdf = self._cuts.get(key)
        if cdf is None:
            scaled = self._base[self._order] / temperature
            if top_k > 0:
                scaled = scaled[:top_k]
            probs = np.exp(scaled - scaled[0])
            probs /= probs.sum()
            if top_p < 1.0:
                keep = int(np.searchsorted(np.cumsum(probs), top_p) + 1)
                probs = probs[:keep] / probs[:keep].sum()
            cdf = probs.cumsum()
            cdf /= cdf[-1]
            if len(self._cuts) >= _MAX_CUTS:
                self._cuts.clear()
            self._cuts[key] = cdf
        return cdf

    def _topk(self, shift: int, k: int) -> list[tuple[int, float]]:
        ranks = self._order[: min(k, self._vocab)]
        return [((int(j) + shift) % self._vocab, float(self._base[j])) for j in ranks]

    def sample(self, prompt: list[int], spec: SampleSpec, stops: set[int]) -> SampleResult:
        """Generate, then score the prompt as ``spec`` asks."""
        rng = np.random.default_rng(spec.seed)
        sequences = [self._generate(prompt, spec, rng, stops) for _ in range(spec.num_samples)]
        result = SampleResult(sequences=sequences)
        if spec.prompt_logprobs or spec.topk_prompt_logprobs:
            self._score_prompt(prompt, spec, result)
        shifts = np.array([self._shift(t) for t in prompt[:-1]], dtype=np.int64)
        if spec.target_prompt_logprobs is not None:
            ids = np.asarray(spec.target_prompt_logprobs, dtype=np.int64)
            index = (ids - shifts[:, None]) % self._vocab
            result.target_prompt_logprobs = np.where(ids >= 0, self._base[index], 0.0).astype(
                np.float32
            )
        if spec.prompt_alt_tokens_k:
            result.prompt_alt_tokens = self._alternatives(shifts, spec)
        return result

    def _generate(
        self, prompt: list[int], spec: SampleSpec, rng: np.random.Generator, stops: set[int]
    ) -> SampledSeq:
        tokens: list[int] = []
        logprobs: list[float] = []
        topk: list[list[tuple[int, float]]] | None = [] if spec.topk_sample_logprobs else None
        previous = prompt[-1] if prompt else 0
        vocab, order, base = self._vocab, self._order, self._base
        cdf = self._cdf(spec.temperature, spec.top_k, spec.top_p) if spec.temperature > 0 else None
        for _ in range(spec.max_tokens):
            # What ``rng.choice(len(p), p=p)`` does, without checking ``p`` again every time.
            rank = 0 if cdf is None else int(cdf.searchsorted(rng.random(), side="right"))
            index = int(order[rank])
            shift = self._shift(previous)
            token = (index + shift) % vocab
            tokens.append(token)
            logprobs.append(float(base[index]))
            if topk is not None:
                topk.append(self._topk(shift, spec.topk_sample_logprobs))
            if token in stops:
                return SampledSeq(tokens, logprobs, "stop", topk)
            previous = token
        return SampledSeq(tokens, logprobs, "length", topk)

    def _score_prompt(self, prompt: list[int], spec: SampleSpec, result: SampleResult) -> None:
        scores: list[float | None] = [None]
        topk: list[list[tuple[int, float]] | None] = [None]
        for i in range(1, len(prompt)):
            shift = self._shift(prompt[i - 1])
            scores.append(float(self._base[(prompt[i] - shift) % self._vocab]))
            if spec.topk_prompt_logprobs:
                topk.append(self._topk(shift, spec.topk_prompt_logprobs))
        if spec.prompt_logprobs:
            result.prompt_logprobs = scores
        if spec.topk_prompt_logprobs:
            result.topk_prompt_logprobs = topk

    def _alternatives(
        self, shifts: npt.NDArray[np.int64], spec: SampleSpec
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """``k`` independent draws at the request's temperature per prompt position 1..;
        their own stream of the seed, so they leave the sampled sequences unchanged."""
        k, rows = spec.prompt_alt_tokens_k, shifts.shape[0]
        if spec.temperature > 0:
            rng = np.random.default_rng(None if spec.seed is None else [spec.seed, 1])
            cdf = self._cdf(spec.temperature, -1, 1.0)
            ranks = np.minimum(cdf.searchsorted(rng.random((rows, k)), side="right"), len(cdf) - 1)
        else:
            ranks = np.zeros((rows, k), dtype=np.int64)
        index = self._order[ranks]
        tokens = (index + shifts[:, None]) % self._vocab
        return tokens.astype(np.int64), self._base[index].astype(np.float32)
