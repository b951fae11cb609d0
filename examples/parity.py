"""Parity with the official SDK: the same prompt and parameters through both clients.

The seed's parity check (``shared/seed/API_REFERENCE.md``): send the same base model,
prompt and sampling parameters (with a seed) through this SDK and the official ``tinker``
SDK, and compare per-token logprobs and stop reasons rather than raw text. Against the
embedded server (torch engine, which honours seeds) the tokens are identical and the
logprobs agree to float precision; against a server whose sampling is not bit-reproducible,
expect similar logprobs and the same shape of answer.

The official SDK is a development dependency of this project (the ``dev`` extra installs
``tinker==0.38.0``; ``make test`` has it). Elsewhere: ``pip install tinker``.

    python examples/parity.py

Starts the embedded server (torch engine); set ``TINKER_BASE_URL`` / ``TINKER_API_KEY`` (and
``EXAMPLE_BASE_MODEL``) to compare on another Tinker server. Exits 1 when the answers differ
beyond the tolerance.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence

from tinkex_actors import Config, ServiceClient, Tokenizer, types
from tinkex_actors.server.embedded import config_or_embedded

try:
    import tinker
    from tinker import types as tinker_types
except ImportError:
    sys.exit("this example needs the official SDK: pip install tinker (or the 'dev' extra)")

BASE_MODEL = os.environ.get("EXAMPLE_BASE_MODEL", "tinkex/tiny-llama")
PROMPT = "Summarize: Tinkex ports the Python SDK."
#: (label, sampling parameters) compared one after the other.
CASES: list[tuple[str, dict[str, object]]] = [
    ("seeded sampling", {"max_tokens": 24, "temperature": 0.7, "top_p": 0.9, "seed": 123}),
    # A stop string the tiny model soon produces, so that the stop reasons compare "stop".
    ("greedy, stop at 'm'", {"max_tokens": 24, "temperature": 0.0, "stop": ["m"]}),
]
TOLERANCE = 1e-4  # largest accepted |logprob difference|


def max_difference(ours: Sequence[float | None], theirs: Sequence[float | None]) -> float:
    """Largest absolute difference between two logprob lists (None positions must match)."""
    if len(ours) != len(theirs):
        return math.inf
    worst = 0.0
    for a, b in zip(ours, theirs, strict=True):
        if (a is None) != (b is None) or (a is not None and math.isnan(a)) != (
            b is not None and math.isnan(b)
        ):
            return math.inf
        if a is not None and b is not None and not math.isnan(a):
            worst = max(worst, abs(a - b))
    return worst


def compare(config: Config) -> bool:
    tokens = Tokenizer.encode(PROMPT, BASE_MODEL)
    official = tinker.ServiceClient(base_url=config.base_url, api_key=config.api_key)
    try:
        with ServiceClient(config) as service:
            ours_sampler = service.create_sampling_client(base_model=BASE_MODEL)
            their_sampler = official.create_sampling_client(base_model=BASE_MODEL)
            agree = True
            for label, params in CASES:
                ours = ours_sampler.sample(
                    types.ModelInput.from_ints(tokens),
                    types.SamplingParams(**params),  # type: ignore[arg-type]
                    prompt_logprobs=True,
                ).result()
                theirs = their_sampler.sample(
                    prompt=tinker_types.ModelInput.from_ints(tokens),
                    num_samples=1,
                    sampling_params=tinker_types.SamplingParams(**params),  # type: ignore[arg-type]
                    include_prompt_logprobs=True,
                ).result()
                agree &= report(label, ours, theirs)
            return agree
    finally:
        official.close("success").result(timeout=60)


def report(label: str, ours: types.SampleResponse, theirs: tinker_types.SampleResponse) -> bool:
    a, b = ours.sequences[0], theirs.sequences[0]
    same_tokens = a.tokens == list(b.tokens)
    sample_diff = max_difference(a.logprobs or [], list(b.logprobs or []))
    prompt_diff = max_difference(ours.prompt_logprobs or [], list(theirs.prompt_logprobs or []))
    print(f"\n{label}:")
    print(f"  {'#':>3}  {'token':>6}  {'text':14}  {'tinkex_actors':>13}  {'tinker':>10}")
    for i, (token, ours_lp) in enumerate(zip(a.tokens, a.logprobs or [], strict=False)):
        their_lp = b.logprobs[i] if b.logprobs is not None and i < len(b.logprobs) else math.nan
        text = Tokenizer.decode([token], BASE_MODEL)
        print(f"  {i:3d}  {token:6d}  {text!r:14}  {ours_lp:13.6f}  {their_lp:10.6f}")
    print(f"  stop reasons: {a.stop_reason} / {b.stop_reason}; same tokens: {same_tokens}")
    print(f"  max |logprob difference|: sampled {sample_diff:.2e}, prompt {prompt_diff:.2e}")
    return (
        same_tokens
        and a.stop_reason == b.stop_reason
        and sample_diff <= TOLERANCE
        and prompt_diff <= TOLERANCE
    )


def main() -> None:
    with config_or_embedded("torch") as config:
        agree = compare(config)
    print("\nparity: OK" if agree else "\nparity: the SDKs' answers differ")
    if not agree:
        sys.exit(1)


if __name__ == "__main__":
    main()
