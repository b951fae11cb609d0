"""Checks that turn bad input into a 400 before anything is queued or written.

Every message names the offending field (``data[2].loss_fn_inputs.weights``) and what was
expected, so a client sees at once what to fix.
"""

from __future__ import annotations

import re

import numpy as np

from tinkex_actors._constants import CHECKPOINT_TTL_MAX, LOSS_FNS
from tinkex_actors.server.engine_api import AdamSpec, BaseModelInfo, LoraSpec, SampleSpec
from tinkex_actors.server.http_errors import bad_request
from tinkex_actors.server.payloads import FwdBwdPayload
from tinkex_actors.server.schemas import AdamParamsBody, LoraConfigBody, SampleBody

__all__ = [
    "adam_spec",
    "checkpoint_name",
    "lora_spec",
    "sample_spec",
    "ttl_seconds",
    "validate_forward_backward",
]

_RL_INPUTS = ("target_tokens", "logprobs", "advantages")
REQUIRED_INPUTS: dict[str, tuple[str, ...]] = {
    "cross_entropy": ("target_tokens",),
    "importance_sampling": _RL_INPUTS,
    "ppo": _RL_INPUTS,
    "cispo": _RL_INPUTS,
    "dro": _RL_INPUTS,
}
_MAX_LORA_RANK = 1024
_MAX_NUM_SAMPLES = 128
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
#: Seeds are folded into this range so every engine's generator accepts them.
_SEED_MODULUS = 2**63


def _check_vocab(tokens: np.ndarray, vocab: int, where: str) -> None:
    if tokens.size and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab):
        bad = int(tokens.min()) if int(tokens.min()) < 0 else int(tokens.max())
        raise bad_request(f"{where}: token id {bad} is outside the vocabulary [0, {vocab})")


def validate_forward_backward(payload: FwdBwdPayload, info: BaseModelInfo) -> None:
    """Reject unknown losses, missing or misshapen inputs and out-of-vocabulary tokens."""
    if payload.loss_fn not in LOSS_FNS:
        raise bad_request(f"loss_fn: unknown loss {payload.loss_fn!r}; expected one of {LOSS_FNS}")
    if payload.loss_fn_config_text:
        key = next(iter(payload.loss_fn_config_text))
        raise bad_request(f"loss_fn_config.{key}: expected a number (custom losses unsupported)")
    for key, value in payload.loss_fn_config.items():
        if not np.isfinite(value):
            raise bad_request(f"loss_fn_config.{key}: expected a finite number")
    if not payload.data:
        raise bad_request("data: expected at least one Datum")
    required = REQUIRED_INPUTS[payload.loss_fn]
    for i, datum in enumerate(payload.data):
        n = int(datum.tokens.shape[0])
        if n == 0:
            raise bad_request(f"data[{i}].model_input: expected at least one token")
        if n > info.max_context_length:
            raise bad_request(
                f"data[{i}].model_input: {n} tokens exceed the context length "
                f"{info.max_context_length} of {info.name}"
            )
        _check_vocab(datum.tokens, info.vocab_size, f"data[{i}].model_input")
        for name in required:
            if name not in datum.inputs:
                raise bad_request(
                    f"data[{i}].loss_fn_inputs.{name}: required by loss {payload.loss_fn!r}"
                )
        for name, array in datum.inputs.items():
            where = f"data[{i}].loss_fn_inputs.{name}"
            if array.ndim == 0 or array.shape[0] != n:
                got = "a scalar" if array.ndim == 0 else f"length {array.shape[0]}"
                raise bad_request(f"{where}: {got} does not match the {n} model input tokens")
            if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
                raise bad_request(f"{where}: expected finite numbers")
        targets = datum.inputs["target_tokens"]
        if targets.dtype.kind not in "iu":
            raise bad_request(f"data[{i}].loss_fn_inputs.target_tokens: expected integers")
        _check_vocab(targets, info.vocab_size, f"data[{i}].loss_fn_inputs.target_tokens")


def lora_spec(config: LoraConfigBody | None) -> LoraSpec:
    """LoRA settings from a create_model body."""
    config = config or LoraConfigBody()
    if not 1 <= config.rank <= _MAX_LORA_RANK:
        raise bad_request(f"lora_config.rank: expected 1..{_MAX_LORA_RANK}, got {config.rank}")
    if not (config.train_mlp or config.train_attn or config.train_unembed):
        raise bad_request("lora_config: at least one of train_mlp/train_attn/train_unembed")
    return LoraSpec(
        rank=config.rank,
        seed=config.seed,
        train_mlp=config.train_mlp,
        train_attn=config.train_attn,
        train_unembed=config.train_unembed,
    )


def adam_spec(params: AdamParamsBody | None) -> AdamSpec:
    """AdamW settings from an optim_step body."""
    params = params or AdamParamsBody()
    values = params.model_dump()
    for key, value in values.items():
        if not np.isfinite(value) or value < 0:
            raise bad_request(f"adam_params.{key}: expected a finite number >= 0, got {value}")
    for key in ("beta1", "beta2"):
        if values[key] >= 1:
            raise bad_request(f"adam_params.{key}: expected a value below 1")
    return AdamSpec(**values)


def checkpoint_name(name: str, field: str = "path") -> str:
    """A checkpoint name: letters, digits, ``.``, ``_``, ``-`` (no ``/``), at most 200."""
    if not _NAME_RE.match(name) or name in {".", ".."}:
        raise bad_request(
            f"{field}: invalid checkpoint name {name!r}; use 1-200 of A-Z a-z 0-9 . _ - "
            "(starting with a letter or digit)"
        )
    return name


def ttl_seconds(value: int | None, minimum: int) -> int | None:
    """A checkpoint TTL within [minimum, ten years], or None (never expires)."""
    if value is None:
        return None
    if not minimum <= value <= CHECKPOINT_TTL_MAX:
        raise bad_request(f"ttl_seconds: expected {minimum}..{CHECKPOINT_TTL_MAX}, got {value}")
    return value


def _stop(
    stop: str | list[str] | list[int] | None,
) -> tuple[tuple[str, ...] | None, tuple[int, ...] | None]:
    if stop is None:
        return None, None
    if isinstance(stop, str):
        return (stop,), None
    if not stop:
        return (), ()
    if all(isinstance(s, str) for s in stop):
        if any(s == "" for s in stop):
            raise bad_request("sampling_params.stop: stop strings must not be empty")
        return tuple(str(s) for s in stop), None
    return None, tuple(int(s) for s in stop)


def sample_spec(body: SampleBody, prompt: np.ndarray, info: BaseModelInfo) -> SampleSpec:
    """Validate an asample body against the sampler's base model."""
    params = body.sampling_params
    n = int(prompt.shape[0])
    if n == 0:
        raise bad_request("prompt: expected at least one token")
    _check_vocab(prompt, info.vocab_size, "prompt")
    if params.max_tokens is None:
        raise bad_request("sampling_params.max_tokens: required")
    if params.max_tokens < 1:
        raise bad_request(f"sampling_params.max_tokens: expected >= 1, got {params.max_tokens}")
    if n + params.max_tokens > info.max_context_length:
        raise bad_request(
            f"sampling_params.max_tokens: prompt ({n}) + max_tokens ({params.max_tokens}) "
            f"exceeds the context length {info.max_context_length}"
        )
    if not 1 <= body.num_samples <= _MAX_NUM_SAMPLES:
        raise bad_request(f"num_samples: expected 1..{_MAX_NUM_SAMPLES}, got {body.num_samples}")
    if not np.isfinite(params.temperature) or params.temperature < 0:
        raise bad_request(f"sampling_params.temperature: expected >= 0, got {params.temperature}")
    if not 0 < params.top_p <= 1:
        raise bad_request(f"sampling_params.top_p: expected (0, 1], got {params.top_p}")
    if params.top_k != -1 and params.top_k < 1:
        raise bad_request(
            f"sampling_params.top_k: expected -1 (no limit) or >= 1, got {params.top_k}"
        )
    if not 0 <= body.topk_prompt_logprobs <= info.vocab_size:
        raise bad_request(f"topk_prompt_logprobs: expected 0..{info.vocab_size}")
    if body.topk_sample_logprobs:
        raise bad_request("topk_sample_logprobs: not supported by this server")
    if body.target_prompt_logprobs is not None:
        raise bad_request("target_prompt_logprobs: not supported by this server")
    if body.prompt_alt_tokens_k:
        raise bad_request("prompt_alt_tokens_k: not supported by this server")
    last_n = body.prompt_logprobs_last_n
    if last_n is not None and (not body.prompt_logprobs or not 1 <= last_n <= n - 1):
        raise bad_request(f"prompt_logprobs_last_n: needs prompt_logprobs and 1..{n - 1}")
    stop_strings, stop_ids = _stop(params.stop)
    if stop_ids:
        _check_vocab(np.asarray(stop_ids), info.vocab_size, "sampling_params.stop")
    return SampleSpec(
        prompt=[int(t) for t in prompt],
        max_tokens=params.max_tokens,
        num_samples=body.num_samples,
        temperature=params.temperature,
        top_k=params.top_k,
        top_p=params.top_p,
        seed=None if params.seed is None else params.seed % _SEED_MODULUS,
        stop_strings=stop_strings,
        stop_token_ids=stop_ids,
        prompt_logprobs=bool(body.prompt_logprobs),
        topk_prompt_logprobs=body.topk_prompt_logprobs,
    )
