"""``tinkex sample``: generate from a base model or a sampler checkpoint."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any

import orjson

from tinkex_actors import _constants as c
from tinkex_actors.cli._common import (
    add_client_options,
    add_output_options,
    emit_json,
    make_config,
    positive_int,
)
from tinkex_actors.errors import TokenizerError, ValidationError
from tinkex_actors.rest import RestClient
from tinkex_actors.tokenizer import Tokenizer, TokenizerHandle
from tinkex_actors.types import ModelInput, SampleResponse, SamplingParams

__all__ = ["register"]

#: How long the command waits for the samples.
_RESULT_TIMEOUT = 600.0


def _prompt(args: argparse.Namespace) -> tuple[str | None, list[int] | None]:
    """The prompt as text, or as token ids (``--prompt-file`` holding a JSON list of ints)."""
    if args.prompt is not None:
        return args.prompt, None
    try:
        raw = Path(args.prompt_file).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValidationError(
            f"cannot read {args.prompt_file!r}: {exc}", field="--prompt-file"
        ) from exc
    stripped = raw.strip()
    if stripped.startswith("["):
        try:
            ids = orjson.loads(stripped)
        except orjson.JSONDecodeError:
            ids = None
        if isinstance(ids, list) and all(
            isinstance(i, int) and not isinstance(i, bool) for i in ids
        ):
            return None, ids
    return raw, None


def _base_model(args: argparse.Namespace, rest: RestClient) -> str:
    if args.model:
        return str(args.model)
    return rest.get_weights_info_by_tinker_path(args.model_path).base_model


def _sample(args: argparse.Namespace) -> int:
    text, ids = _prompt(args)
    params = SamplingParams(
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
    )
    config = make_config(args)
    with RestClient(config) as rest:
        base_model = _base_model(args, rest)
    tokenizer: TokenizerHandle | None = None
    if text is not None:
        tokenizer = Tokenizer.get(base_model, tokenizer_id=args.tokenizer)
        ids = tokenizer.encode(text)
    else:
        # Token ids in: decode the samples when the tokenizer is at hand, else print ids.
        with contextlib.suppress(TokenizerError):
            tokenizer = Tokenizer.get(base_model, tokenizer_id=args.tokenizer, local_only=True)
    assert ids is not None
    prompt = ModelInput.from_ints(ids)
    # The actor runtime is imported only when sampling (the other commands do not need it).
    from tinkex_actors._service_client import ServiceClient

    with ServiceClient(config) as service:
        if args.model_path:
            sampler = service.create_sampling_client(model_path=args.model_path)
        else:
            sampler = service.create_sampling_client(base_model=base_model)
        response: SampleResponse = sampler.sample(
            prompt, params, num_samples=args.num_samples
        ).result(_RESULT_TIMEOUT)
    samples = []
    for seq in response.sequences:
        decoded = (
            None if tokenizer is None else tokenizer.decode(seq.tokens, skip_special_tokens=True)
        )
        samples.append(
            {
                "text": decoded,
                "tokens": seq.tokens,
                "logprobs": seq.logprobs,
                "stop_reason": seq.stop_reason,
            }
        )
    if args.json:
        emit_json({"model": base_model, "prompt_tokens": len(ids), "samples": samples})
        return 0
    for i, sample in enumerate(samples):
        if len(samples) > 1:
            print(f"--- sample {i + 1} ({sample['stop_reason']})")
        print(sample["text"] if sample["text"] is not None else sample["tokens"])
    return 0


def register(subparsers: Any) -> None:
    """Add ``sample``."""
    parser = subparsers.add_parser(
        "sample",
        help="sample from a base model or a sampler checkpoint",
        description="Sample completions of a prompt (no chat template is applied).",
    )
    add_client_options(parser)
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--model", help="base model name, e.g. tinkex/tiny-llama")
    model.add_argument("--model-path", help="tinker://<run>/sampler_weights/<name>")
    prompt = parser.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", help="prompt text")
    prompt.add_argument(
        "--prompt-file", help="file holding the prompt text, or a JSON list of token ids"
    )
    parser.add_argument("--tokenizer", help="tokenizer id or local path (default: the model's)")
    parser.add_argument("--max-tokens", type=positive_int, default=64, help="default 64")
    parser.add_argument("--temperature", type=float, default=c.SAMPLING_TEMPERATURE)
    parser.add_argument("--top-k", type=int, default=c.SAMPLING_TOP_K, help="-1: no limit")
    parser.add_argument("--top-p", type=float, default=c.SAMPLING_TOP_P)
    parser.add_argument("--seed", type=int, help="random seed")
    parser.add_argument("--num-samples", type=positive_int, default=1)
    add_output_options(parser)
    parser.set_defaults(func=_sample)
