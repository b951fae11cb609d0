"""Weights: save_weights, load_weights (two addressing modes), save_weights_for_sampler, info."""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

import attrs

from tinkex_actors.errors import ValidationError
from tinkex_actors.types import _validate as v
from tinkex_actors.types._training import OptimizerConfig
from tinkex_actors.types._typecheck import typed

__all__ = [
    "LoadWeightsRequest",
    "LoadWeightsResponse",
    "SamplingClientKind",
    "SaveWeightsForSamplerRequest",
    "SaveWeightsForSamplerResponse",
    "SaveWeightsForSamplerResponseInternal",
    "SaveWeightsRequest",
    "SaveWeightsResponse",
    "WeightsInfoRequest",
    "WeightsInfoResponse",
]

#: ``snapshot`` saves fixed weights; ``inflight`` publishes weights later saves update.
SamplingClientKind: TypeAlias = Literal["snapshot", "inflight"]

_TTL = v.int_field(minimum=1, optional=True)
_STR_METADATA = v.str_mapping(values=str, optional=True)


@attrs.frozen(kw_only=True, field_transformer=typed)
class SaveWeightsRequest:
    """``POST /api/v1/save_weights`` (training state; ``path`` is the checkpoint name)."""

    model_id: str = attrs.field(validator=v.str_field(nonempty=True))
    path: str | None = attrs.field(
        default=None, validator=v.str_field(nonempty=True, optional=True)
    )
    seq_id: int | None = attrs.field(default=None, validator=v.int_field(minimum=0, optional=True))
    ttl_seconds: int | None = attrs.field(default=None, validator=_TTL)
    overwrite: bool = attrs.field(default=False, validator=v.bool_field())
    user_metadata: dict[str, str] | None = attrs.field(default=None, validator=_STR_METADATA)
    type: Literal["save_weights"] = attrs.field(
        default="save_weights", validator=v.one_of(("save_weights",))
    )


@attrs.frozen(kw_only=True, field_transformer=typed)
class SaveWeightsResponse:
    """Result of a save_weights future: ``tinker://<run>/weights/<name>``."""

    path: str
    type: Literal["save_weights"] | None = None


@attrs.frozen(kw_only=True, field_transformer=typed)
class LoadWeightsRequest:
    """``POST /api/v1/load_weights``, in one of two addressing modes.

    * legacy: ``model_id`` + ``seq_id`` (the model's first request after create_model);
    * create-via-load: ``session_id`` + ``model_seq_id`` (no create_model; the server names
      the model ``"{session_id}:train:{model_seq_id}"``), optionally ``base_model``,
      ``user_metadata`` and, for weights-only loads, ``optimizer_config``.
    """

    path: str = attrs.field(validator=v.str_field(nonempty=True))
    optimizer: bool = attrs.field(validator=v.bool_field())
    model_id: str | None = attrs.field(
        default=None, validator=v.str_field(nonempty=True, optional=True)
    )
    seq_id: int | None = attrs.field(default=None, validator=v.int_field(minimum=0, optional=True))
    session_id: str | None = attrs.field(
        default=None, validator=v.str_field(nonempty=True, optional=True)
    )
    model_seq_id: int | None = attrs.field(
        default=None, validator=v.int_field(minimum=0, optional=True)
    )
    base_model: str | None = attrs.field(
        default=None, validator=v.str_field(nonempty=True, optional=True)
    )
    user_metadata: dict[str, Any] | None = attrs.field(
        default=None, validator=v.str_mapping(optional=True)
    )
    optimizer_config: OptimizerConfig | None = attrs.field(
        default=None, validator=v.instance_of(OptimizerConfig, optional=True)
    )
    weights_access_token: str | None = attrs.field(
        default=None, validator=v.str_field(optional=True)
    )
    type: Literal["load_weights"] = attrs.field(
        default="load_weights", validator=v.one_of(("load_weights",))
    )

    def __attrs_post_init__(self) -> None:
        legacy = self.model_id is not None
        via_load = self.session_id is not None
        if legacy == via_load:
            raise ValidationError(
                "set model_id (legacy) or session_id + model_seq_id (create-via-load), not both",
                field="LoadWeightsRequest.session_id" if legacy else "LoadWeightsRequest.model_id",
            )
        if via_load and self.model_seq_id is None:
            raise ValidationError(
                "is required with session_id", field="LoadWeightsRequest.model_seq_id"
            )
        if legacy and (self.model_seq_id is not None or self.base_model is not None):
            raise ValidationError(
                "belongs to create-via-load (session_id) requests only",
                field="LoadWeightsRequest.model_seq_id"
                if self.model_seq_id is not None
                else "LoadWeightsRequest.base_model",
            )
        if via_load and self.seq_id is not None:
            raise ValidationError(
                "belongs to legacy (model_id) requests only", field="LoadWeightsRequest.seq_id"
            )

    @property
    def derived_model_id(self) -> str | None:
        """The model id a create-via-load request creates (``None`` for legacy requests)."""
        if self.session_id is None:
            return None
        return f"{self.session_id}:train:{self.model_seq_id}"


@attrs.frozen(kw_only=True, field_transformer=typed)
class LoadWeightsResponse:
    """Result of a load_weights future (every field optional)."""

    path: str | None = None
    model_id: str | None = None
    type: Literal["load_weights"] | None = None


@attrs.frozen(kw_only=True, field_transformer=typed)
class SaveWeightsForSamplerRequest:
    """``POST /api/v1/save_weights_for_sampler``.

    Named save: ``path`` (the name), result carries ``path``. Unnamed save:
    ``sampling_session_seq_id``, result carries the ``sampling_session_id`` the server created.
    """

    model_id: str = attrs.field(validator=v.str_field(nonempty=True))
    path: str | None = attrs.field(
        default=None, validator=v.str_field(nonempty=True, optional=True)
    )
    sampling_session_seq_id: int | None = attrs.field(
        default=None, validator=v.int_field(minimum=0, optional=True)
    )
    kind: SamplingClientKind = attrs.field(
        default="snapshot", validator=v.one_of(("snapshot", "inflight"))
    )
    seq_id: int | None = attrs.field(default=None, validator=v.int_field(minimum=0, optional=True))
    ttl_seconds: int | None = attrs.field(default=None, validator=_TTL)
    user_metadata: dict[str, str] | None = attrs.field(default=None, validator=_STR_METADATA)
    type: Literal["save_weights_for_sampler"] = attrs.field(
        default="save_weights_for_sampler", validator=v.one_of(("save_weights_for_sampler",))
    )

    def __attrs_post_init__(self) -> None:
        if self.path is None and self.sampling_session_seq_id is None:
            raise ValidationError(
                "give a path (named save) or a sampling_session_seq_id (unnamed save)",
                field="SaveWeightsForSamplerRequest.path",
            )


@attrs.frozen(kw_only=True, field_transformer=typed)
class SaveWeightsForSamplerResponseInternal:
    """Result of a save_weights_for_sampler future: ``path`` (named) or ``sampling_session_id``."""

    path: str | None = None
    sampling_session_id: str | None = None
    type: Literal["save_weights_for_sampler"] | None = None


@attrs.frozen(kw_only=True, field_transformer=typed)
class SaveWeightsForSamplerResponse:
    """A named sampler save: ``tinker://<run>/sampler_weights/<name>``."""

    path: str
    type: Literal["save_weights_for_sampler"] | None = None


@attrs.frozen(kw_only=True, field_transformer=typed)
class WeightsInfoRequest:
    """``POST /api/v1/weights_info``."""

    tinker_path: str = attrs.field(validator=v.str_field(nonempty=True))


@attrs.frozen(kw_only=True, field_transformer=typed)
class WeightsInfoResponse:
    """What a checkpoint holds: base model and LoRA settings."""

    base_model: str
    is_lora: bool
    optimizer_config: OptimizerConfig = attrs.field(factory=OptimizerConfig)
    lora_rank: int | None = None
    train_unembed: bool | None = None
    train_mlp: bool | None = None
    train_attn: bool | None = None
