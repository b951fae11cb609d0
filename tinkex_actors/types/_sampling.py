"""Sampling: SamplingParams, sample requests and results, sampling sessions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, TypeAlias

import attrs

from tinkex_actors._constants import (
    SAMPLING_TEMPERATURE,
    SAMPLING_TOP_K,
    SAMPLING_TOP_P,
    TINKER_SCHEME,
)
from tinkex_actors.errors import ResponseDecodeError, ValidationError
from tinkex_actors.types import _validate as v
from tinkex_actors.types._model_input import ModelInput
from tinkex_actors.types._tensor import TensorData
from tinkex_actors.types._typecheck import typed

__all__ = [
    "CreateSamplingSessionRequest",
    "CreateSamplingSessionResponse",
    "GetSamplerResponse",
    "PromptAltTokens",
    "SampleRequest",
    "SampleResponse",
    "SampledSequence",
    "SamplingParams",
    "StopReason",
    "TopkLogprobs",
]

StopReason: TypeAlias = Literal["stop", "length"]
#: Top-k logprobs per position: up to k ``(token_id, logprob)`` pairs, or None where the
#: server computed nothing (the protobuf sentinel cells are already trimmed).
TopkLogprobs: TypeAlias = list[list[tuple[int, float]] | None]
Stop: TypeAlias = str | tuple[str, ...] | tuple[int, ...]


def _to_stop(value: str | Sequence[str] | Sequence[int] | None) -> Stop | None:
    """Normalize ``stop``: a string, all-string or all-int sequence (stored as a tuple)."""
    field = "SamplingParams.stop"
    raw: object = value
    if raw is None or isinstance(raw, str):
        return raw
    if isinstance(raw, bytes) or not isinstance(raw, Sequence):
        raise ValidationError(
            f"expected a string or a list of strings or token ids, got {v.type_name(raw)}",
            field=field,
        )
    items: tuple[Any, ...] = tuple(raw)
    if all(isinstance(item, str) for item in items):
        return items
    for i, item in enumerate(items):
        if not v.is_int(item):
            kind = "strings and token ids" if any(isinstance(x, str) for x in items) else None
            raise ValidationError(
                f"mixes {kind}; use one kind"
                if kind
                else f"element {i} is a {v.type_name(item)}; expected a string or a token id",
                field=field,
            )
    return tuple(int(item) for item in items)


@attrs.frozen(kw_only=True, field_transformer=typed)
class SamplingParams:
    """How to sample.

    Args:
        max_tokens: most tokens to generate (>= 1; the server requires it in practice).
        seed: random seed for reproducible sampling.
        stop: a stop string, a list of stop strings or a list of stop token ids; None keeps
            the model's implicit end-of-sequence stop, ``[]`` disables every stop.
        temperature: >= 0 (0 is greedy).
        top_k: -1 for no limit, else the number of candidates kept.
        top_p: nucleus probability in (0, 1].
    """

    max_tokens: int | None = attrs.field(
        default=None, validator=v.int_field(minimum=1, optional=True)
    )
    seed: int | None = attrs.field(default=None, validator=v.int_field(optional=True))
    stop: Stop | None = attrs.field(default=None, converter=_to_stop)
    temperature: float = attrs.field(
        default=SAMPLING_TEMPERATURE, validator=v.float_field(minimum=0)
    )
    top_k: int = attrs.field(default=SAMPLING_TOP_K, validator=v.int_field(minimum=-1))
    top_p: float = attrs.field(default=SAMPLING_TOP_P, validator=v.float_field(above=0, maximum=1))

    def __attrs_post_init__(self) -> None:
        v.set_floats(self, "temperature", "top_p")


@attrs.frozen(kw_only=True, field_transformer=typed)
class SampleRequest:
    """``POST /api/v1/asample`` (answers with a future of :class:`SampleResponse`).

    A SamplingClient addresses a sampling session (``sampling_session_id`` + ``seq_id``);
    ``base_model`` / ``model_path`` address a model directly.
    """

    prompt: ModelInput = attrs.field(validator=v.instance_of(ModelInput))
    sampling_params: SamplingParams = attrs.field(validator=v.instance_of(SamplingParams))
    num_samples: int = attrs.field(default=1, validator=v.int_field(minimum=1))
    base_model: str | None = attrs.field(
        default=None, validator=v.str_field(nonempty=True, optional=True)
    )
    model_path: str | None = attrs.field(
        default=None, validator=v.str_field(nonempty=True, optional=True)
    )
    sampling_session_id: str | None = attrs.field(
        default=None, validator=v.str_field(nonempty=True, optional=True)
    )
    seq_id: int | None = attrs.field(default=None, validator=v.int_field(minimum=0, optional=True))
    prompt_logprobs: bool | None = attrs.field(default=None, validator=v.bool_field(optional=True))
    topk_prompt_logprobs: int = attrs.field(default=0, validator=v.int_field(minimum=0))
    topk_sample_logprobs: int = attrs.field(default=0, validator=v.int_field(minimum=0))
    target_prompt_logprobs: TensorData | None = attrs.field(
        default=None, validator=v.instance_of(TensorData, optional=True)
    )
    prompt_alt_tokens_k: int = attrs.field(default=0, validator=v.int_field(minimum=0))
    prompt_logprobs_last_n: int | None = attrs.field(
        default=None, validator=v.int_field(minimum=1, optional=True)
    )
    record_stability_info: bool | None = attrs.field(
        default=None, validator=v.bool_field(optional=True)
    )
    type: Literal["sample"] = attrs.field(default="sample", validator=v.one_of(("sample",)))

    def __attrs_post_init__(self) -> None:
        if self.model_path is not None and not self.model_path.startswith(TINKER_SCHEME):
            raise ValidationError(
                f"must start with tinker://, got {self.model_path!r}",
                field="SampleRequest.model_path",
            )
        if self.prompt_logprobs_last_n is not None and not self.prompt_logprobs:
            raise ValidationError(
                "needs prompt_logprobs=True", field="SampleRequest.prompt_logprobs_last_n"
            )


@attrs.frozen(kw_only=True, field_transformer=typed)
class SampledSequence:
    """One generated sequence.

    Attributes:
        stop_reason: ``"stop"`` (a stop condition) or ``"length"`` (max_tokens reached).
        tokens: the generated token ids.
        logprobs: one logprob per generated token, or None when not returned.
        topk_logprobs: top-k logprobs per generated position, when requested.
        sequence_id: the server's id of this sequence (from the sample future's
            ``sample_sequence_ids``), used to reference it in later requests.
    """

    stop_reason: StopReason
    tokens: list[int]
    logprobs: list[float] | None = None
    topk_logprobs: TopkLogprobs | None = None
    sequence_id: str | None = None


@attrs.frozen(kw_only=True, field_transformer=typed)
class PromptAltTokens:
    """Alternative draws at every prompt position after the first: two ``[len-1, k]`` tensors."""

    tokens: TensorData
    logprobs: TensorData


@attrs.frozen(kw_only=True, field_transformer=typed)
class SampleResponse:
    """Result of a sample future.

    Attributes:
        sequences: the generated sequences.
        prompt_logprobs: one entry per prompt token (None where not computed, e.g. the first
            token); None when not requested.
        topk_prompt_logprobs: top-k logprobs per prompt position, when requested.
        prompt_cache_hit_tokens: prompt tokens served from the prefix cache.
        target_prompt_logprobs: logprobs of the ids a request's ``target_prompt_logprobs``
            named (float32, same layout).
        prompt_alt_tokens: the draws ``prompt_alt_tokens_k`` asked for.
    """

    sequences: list[SampledSequence]
    prompt_logprobs: list[float | None] | None = None
    topk_prompt_logprobs: TopkLogprobs | None = None
    prompt_cache_hit_tokens: int = 0
    target_prompt_logprobs: TensorData | None = None
    prompt_alt_tokens: PromptAltTokens | None = None

    def check_honors(self, request: SampleRequest) -> SampleResponse:
        """Check that the server honored the request's 0.38 fields; returns ``self``.

        A server that predates ``prompt_alt_tokens_k`` or ``prompt_logprobs_last_n`` ignores
        them and answers anyway: the official SDK 0.38 turns that into an error rather than
        hand back a response without the draws, or with logprobs of tokens the caller asked
        to skip. So does this check.

        Raises:
            ResponseDecodeError: ``prompt_alt_tokens_k`` > 0 but no ``prompt_alt_tokens``, or
                ``prompt_logprobs_last_n`` set but a prompt logprob before that suffix.
        """
        k = request.prompt_alt_tokens_k
        if k > 0 and self.prompt_alt_tokens is None:
            raise ResponseDecodeError(
                f"prompt_alt_tokens_k={k} was requested but the server returned no "
                "prompt_alt_tokens; it may predate this feature",
                expected="prompt_alt_tokens in the SampleResponse",
            )
        last_n = request.prompt_logprobs_last_n
        if last_n is not None and self.prompt_logprobs is not None:
            skipped = self.prompt_logprobs[: max(0, len(self.prompt_logprobs) - last_n)]
            if any(value is not None for value in skipped):
                raise ResponseDecodeError(
                    f"prompt_logprobs_last_n={last_n} was requested but the server returned "
                    "prompt logprobs before that suffix; it may predate this feature",
                    expected=f"prompt logprobs for the last {last_n} prompt tokens only",
                )
        return self

    def with_sequence_ids(self, sequence_ids: Sequence[str]) -> SampleResponse:
        """Stamp each sequence with its id from the future's ``sample_sequence_ids``.

        Raises:
            ValidationError: ``sequence_ids`` is not a list of strings.
            ResponseDecodeError: the server announced a different number of ids.
        """
        given: object = sequence_ids
        if (
            isinstance(given, str)
            or not isinstance(given, Sequence)
            or not all(isinstance(sid, str) for sid in given)
        ):
            raise ValidationError(
                f"expected a list of strings, got {v.type_name(given)}",
                field="SampleResponse.sequence_ids",
            )
        if len(sequence_ids) != len(self.sequences):
            raise ResponseDecodeError(
                f"the sample future announced {len(sequence_ids)} sequence ids but the result "
                f"holds {len(self.sequences)} sequences",
                expected="one sample_sequence_id per sequence",
            )
        return attrs.evolve(
            self,
            sequences=[
                attrs.evolve(seq, sequence_id=sid)
                for seq, sid in zip(self.sequences, sequence_ids, strict=True)
            ],
        )


@attrs.frozen(kw_only=True, field_transformer=typed)
class CreateSamplingSessionRequest:
    """``POST /api/v1/create_sampling_session``: give ``base_model`` or ``model_path``."""

    session_id: str = attrs.field(validator=v.str_field(nonempty=True))
    sampling_session_seq_id: int = attrs.field(validator=v.int_field(minimum=0))
    base_model: str | None = attrs.field(
        default=None, validator=v.str_field(nonempty=True, optional=True)
    )
    model_path: str | None = attrs.field(
        default=None, validator=v.str_field(nonempty=True, optional=True)
    )
    type: Literal["create_sampling_session"] = attrs.field(
        default="create_sampling_session", validator=v.one_of(("create_sampling_session",))
    )

    def __attrs_post_init__(self) -> None:
        if self.base_model is None and self.model_path is None:
            raise ValidationError(
                "give base_model or model_path", field="CreateSamplingSessionRequest.base_model"
            )
        if self.model_path is not None and not self.model_path.startswith(TINKER_SCHEME):
            raise ValidationError(
                f"must start with tinker://, got {self.model_path!r}",
                field="CreateSamplingSessionRequest.model_path",
            )


@attrs.frozen(kw_only=True, field_transformer=typed)
class CreateSamplingSessionResponse:
    """Answer of create_sampling_session."""

    sampling_session_id: str
    type: Literal["create_sampling_session"] = "create_sampling_session"


@attrs.frozen(kw_only=True, field_transformer=typed)
class GetSamplerResponse:
    """``GET /api/v1/samplers/{id}``: the sampler's base model and weights path."""

    sampler_id: str
    base_model: str
    model_path: str | None = None
