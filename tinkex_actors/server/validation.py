"""Checks that turn bad input into a 400 before anything is queued or written.

Every message names the offending field (``data[2].loss_fn_inputs.weights``) and what was
expected, so a client sees at once what to fix. Losses are checked by the loss registry
(``engines/losses.py``), the same code the engines run, so the HTTP layer and the engines
agree on every name, input and config key.
"""

from __future__ import annotations

import math
import re
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from tinkex_actors._constants import CHECKPOINT_TTL_MAX
from tinkex_actors.server.engine_api import (
    OPTIMIZER_FAMILIES,
    AdamSpec,
    BaseModelInfo,
    DimuonSpec,
    EngineUserError,
    LoraSpec,
    OptimizerSpec,
    SampleSpec,
)
from tinkex_actors.server.engines.losses import check_config, loss_spec, prepare_datum
from tinkex_actors.server.http_errors import bad_request
from tinkex_actors.server.payloads import FwdBwdPayload
from tinkex_actors.server.schemas import AdamParamsBody, LoraConfigBody, SampleBody

__all__ = [
    "adam_spec",
    "checkpoint_name",
    "lora_spec",
    "optim_params",
    "optimizer_spec",
    "sample_spec",
    "target_prompt_ids",
    "ttl_seconds",
    "validate_forward_backward",
]

_MAX_LORA_RANK = 1024
_MAX_NUM_SAMPLES = 128
#: Most alternative draws per prompt position (``prompt_alt_tokens_k``).
_MAX_ALT_TOKENS_K = 1024
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
#: Seeds are folded into this range so every engine's generator accepts them.
_SEED_MODULUS = 2**63
#: CSR index arrays ``(crow_indices, col_indices)`` of a sparse tensor.
Csr: TypeAlias = tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]
_FAMILY_PARAMS = {"adamw": "AdamParams (adam_params)", "dimuon": "DimuonParams (optimizer_params)"}


def _check_vocab(tokens: np.ndarray, vocab: int, where: str) -> None:
    if tokens.size and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab):
        bad = int(tokens.min()) if int(tokens.min()) < 0 else int(tokens.max())
        raise bad_request(f"{where}: token id {bad} is outside the vocabulary [0, {vocab})")


def validate_forward_backward(payload: FwdBwdPayload, info: BaseModelInfo) -> None:
    """Reject unknown losses, bad config, missing or misshapen inputs, out-of-vocabulary
    tokens: the registry's checks, as a 400."""
    try:
        spec = loss_spec(payload.loss_fn)
        check_config(spec, payload.loss_fn_config, payload.loss_fn_config_text)
        if not payload.data:
            raise EngineUserError("data: expected at least one Datum")
        for i, datum in enumerate(payload.data):
            prepare_datum(i, datum, spec, info.vocab_size, info.max_context_length)
    except EngineUserError as exc:
        raise bad_request(str(exc)) from None


def optimizer_spec(config: dict[str, Any] | None, field: str = "optimizer_config") -> OptimizerSpec:
    """The optimizer family of a create_model (or create-via-load) body; default AdamW."""
    if config is None:
        return OptimizerSpec()
    family = config.get("type", "adamw")
    versions = OPTIMIZER_FAMILIES.get(family) if isinstance(family, str) else None
    if versions is None:
        raise bad_request(
            f"{field}.type: unknown optimizer {family!r}; expected one of "
            f"{sorted(OPTIMIZER_FAMILIES)}"
        )
    version = config.get("version", versions[0])
    if version not in versions or isinstance(version, bool):
        raise bad_request(f"{field}.version: {family} supports version(s) {list(versions)}")
    extra = sorted(set(config) - {"type", "version"})
    if extra or (family == "adamw" and "version" in config):
        raise bad_request(f"{field}: unexpected field(s) {extra or ['version']} for {family}")
    return OptimizerSpec(type=family, version=version)


def _finite(
    value: object, where: str, *, minimum: float = 0.0, below: float | None = None
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise bad_request(f"{where}: expected a finite number, got {value!r}")
    if value < minimum or (below is not None and value >= below):
        bound = f">= {minimum}" + ("" if below is None else f" and < {below}")
        raise bad_request(f"{where}: expected {bound}, got {value}")
    return float(value)


def optim_params(
    adam: AdamParamsBody | None, other: dict[str, Any] | None, optimizer: OptimizerSpec
) -> AdamSpec | DimuonSpec:
    """The step parameters of an optim_step body, which must match the model's family.

    ``adam_params`` carries AdamW's; ``optimizer_params`` (0.38) any other family's, tagged
    by ``type``. The wrong family is a 400 naming both.
    """
    if adam is not None and other is not None:
        raise bad_request("optim_step: give adam_params or optimizer_params, not both")
    if other is None:
        given = "adamw"
    else:
        raw = other.get("type")
        given = raw if isinstance(raw, str) else repr(raw)
        if given not in OPTIMIZER_FAMILIES or given == "adamw":
            raise bad_request(
                f"optimizer_params.type: unknown optimizer family {given!r}; expected 'dimuon' "
                "(AdamW parameters go in adam_params)"
            )
    if given != optimizer.type:
        raise bad_request(
            f"optim_step: this model was created with the {optimizer.type} optimizer and takes "
            f"{_FAMILY_PARAMS[optimizer.type]}, but the request carries "
            f"{_FAMILY_PARAMS[given]}"
        )
    if other is None:
        return adam_spec(adam)
    unknown = sorted(set(other) - {"type", "learning_rate", "grad_clip_norm", "beta1"})
    if unknown:
        raise bad_request(f"optimizer_params: unexpected field(s) {unknown} for dimuon")
    if "learning_rate" not in other:
        raise bad_request("optimizer_params.learning_rate: required for dimuon")
    return DimuonSpec(
        learning_rate=_finite(other["learning_rate"], "optimizer_params.learning_rate"),
        grad_clip_norm=_finite(
            other.get("grad_clip_norm", 0.0), "optimizer_params.grad_clip_norm", minimum=-math.inf
        ),
        beta1=_finite(other.get("beta1", 0.9), "optimizer_params.beta1", below=1.0),
    )


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


def sample_spec(
    body: SampleBody, prompt: np.ndarray, info: BaseModelInfo
) -> tuple[SampleSpec, Csr | None]:
    """Validate an asample body against the sampler's base model.

    Returns the engine's request and, when ``target_prompt_logprobs`` came as a CSR tensor,
    its ``(crow_indices, col_indices)``: the answer is encoded in the same layout.
    """
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
    for name in ("topk_prompt_logprobs", "topk_sample_logprobs"):
        if not 0 <= getattr(body, name) <= info.vocab_size:
            raise bad_request(f"{name}: expected 0..{info.vocab_size}, got {getattr(body, name)}")
    if not 0 <= body.prompt_alt_tokens_k <= _MAX_ALT_TOKENS_K:
        raise bad_request(
            f"prompt_alt_tokens_k: expected 0..{_MAX_ALT_TOKENS_K}, got {body.prompt_alt_tokens_k}"
        )
    if body.prompt_alt_tokens_k and n < 2:
        raise bad_request("prompt_alt_tokens_k: needs a prompt of at least 2 tokens")
    targets, layout = None, None
    if body.target_prompt_logprobs is not None:
        targets, layout = target_prompt_ids(body.target_prompt_logprobs, n, info.vocab_size)
    last_n = body.prompt_logprobs_last_n
    if last_n is not None and (not body.prompt_logprobs or not 1 <= last_n <= n - 1):
        raise bad_request(f"prompt_logprobs_last_n: needs prompt_logprobs and 1..{n - 1}")
    stop_strings, stop_ids = _stop(params.stop)
    if stop_ids:
        _check_vocab(np.asarray(stop_ids), info.vocab_size, "sampling_params.stop")
    spec = SampleSpec(
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
        topk_sample_logprobs=body.topk_sample_logprobs,
        target_prompt_logprobs=targets,
        prompt_alt_tokens_k=body.prompt_alt_tokens_k,
    )
    return spec, layout


def _int_list(value: object, where: str) -> list[int]:
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise bad_request(f"{where}: expected a list of integers")
    return value


def target_prompt_ids(
    value: dict[str, Any], prompt_length: int, vocab_size: int
) -> tuple[npt.NDArray[np.int64], Csr | None]:
    """``target_prompt_logprobs`` of an asample body as a dense int64 ``[len(prompt) - 1, K]``
    matrix (``-1``: nothing requested, also every cell a sparse request leaves out), plus the
    CSR ``(crow_indices, col_indices)`` when it came sparse (the answer uses the same layout).
    """
    where = "target_prompt_logprobs"
    if value.get("dtype") != "int64":
        raise bad_request(f"{where}.dtype: expected 'int64' token ids, got {value.get('dtype')!r}")
    data = np.asarray(_int_list(value.get("data"), f"{where}.data"), dtype=np.int64)
    shape = value.get("shape")
    rows = prompt_length - 1
    if shape is None or len(_int_list(shape, f"{where}.shape")) != 2:
        raise bad_request(f"{where}.shape: expected [{rows}, K] (len(prompt) - 1 rows)")
    if shape[0] != rows or shape[1] < 1:
        raise bad_request(
            f"{where}.shape: expected [{rows}, K] with K >= 1 (one row per prompt position "
            f"after the first), got {shape}"
        )
    layout = None
    if value.get("sparse_crow_indices") is not None:
        crow = np.asarray(_int_list(value["sparse_crow_indices"], f"{where}.sparse_crow_indices"))
        col = np.asarray(_int_list(value.get("sparse_col_indices"), f"{where}.sparse_col_indices"))
        if (
            crow.shape[0] != rows + 1
            or col.shape[0] != data.shape[0]
            or crow[0] != 0
            or crow[-1] != col.shape[0]
            or np.any(np.diff(crow) < 0)
            or (col.size and (col.min() < 0 or col.max() >= shape[1]))
        ):
            raise bad_request(
                f"{where}: CSR indices do not fit shape {shape} and {data.size} values"
            )
        dense = np.full(shape, -1, dtype=np.int64)
        dense[np.repeat(np.arange(rows), np.diff(crow)), col] = data
        layout = (crow.astype(np.int64), col.astype(np.int64))
    else:
        if data.size != shape[0] * shape[1]:
            raise bad_request(f"{where}: shape {shape} does not match {data.size} values")
        dense = data.reshape(shape)
    if dense.size and (dense.min() < -1 or dense.max() >= vocab_size):
        raise bad_request(
            f"{where}: token ids must be in [0, {vocab_size}) or -1 (no request), got "
            f"{int(dense.min()) if dense.min() < -1 else int(dense.max())}"
        )
    return dense, layout
