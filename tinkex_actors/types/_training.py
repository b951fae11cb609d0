"""Models and training: create_model, get_info, unload_model, forward(_backward), optim_step."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal, TypeAlias

import attrs

from tinkex_actors._constants import (
    ADAM_BETA1,
    ADAM_BETA2,
    ADAM_EPS,
    ADAM_LEARNING_RATE,
    DIMUON_VERSION,
)
from tinkex_actors.errors import ValidationError
from tinkex_actors.types import _validate as v
from tinkex_actors.types._datum import Datum
from tinkex_actors.types._tensor import TensorData
from tinkex_actors.types._typecheck import typed

__all__ = [
    "AdamParams",
    "CreateModelRequest",
    "CreateModelResponse",
    "DimuonParams",
    "ForwardBackwardInput",
    "ForwardBackwardOutput",
    "ForwardBackwardRequest",
    "ForwardRequest",
    "GetInfoRequest",
    "GetInfoResponse",
    "LoraConfig",
    "LossFnOutput",
    "LossFnType",
    "ModelData",
    "OptimParams",
    "OptimStepRequest",
    "OptimStepResponse",
    "OptimizerConfig",
    "UnloadModelRequest",
    "UnloadModelResponse",
]

#: The loss names of the official SDK 0.38 (``custom`` is a server-side custom loss, addressed
#: by ``loss_fn_config={"loss_id": ...}``). For type checkers only: any non-empty name is sent
#: as is, and the server decides which it knows (an unknown one is a 400 naming its losses).
LossFnType: TypeAlias = Literal[
    "cross_entropy",
    "importance_sampling",
    "ppo",
    "cispo",
    "dro",
    "gspo",
    "stable_reinforce",
    "custom",
]

#: One datum's outputs, e.g. ``{"logprobs": TensorData(...)}``.
LossFnOutput: TypeAlias = dict[str, TensorData]


# ---------------------------------------------------------------------------- configs


@attrs.frozen(kw_only=True, field_transformer=typed)
class LoraConfig:
    """LoRA adapter settings for create_model.

    Args:
        rank: adapter rank (>= 1).
        seed: initialization seed (None = random).
        train_unembed / train_mlp / train_attn: which layers get adapters; at least one.
    """

    rank: int = attrs.field(validator=v.int_field(minimum=1))
    seed: int | None = attrs.field(default=None, validator=v.int_field(optional=True))
    train_unembed: bool = attrs.field(default=True, validator=v.bool_field())
    train_mlp: bool = attrs.field(default=True, validator=v.bool_field())
    train_attn: bool = attrs.field(default=True, validator=v.bool_field())

    def __attrs_post_init__(self) -> None:
        if not (self.train_unembed or self.train_mlp or self.train_attn):
            raise ValidationError(
                "at least one of train_unembed, train_mlp, train_attn must be True",
                field="LoraConfig.train_attn",
            )


@attrs.frozen(kw_only=True, field_transformer=typed)
class OptimizerConfig:
    """The optimizer family of a model, fixed at create_model.

    ``OptimizerConfig()`` is AdamW (``{"type": "adamw"}``, the default);
    ``OptimizerConfig(type="dimuon")`` is Dimuon version 1 (``{"type": "dimuon", "version":
    1}``; the version is filled in). Other family names pass through as given, for servers
    that know them.

    Raises:
        ValidationError: a version for ``adamw``, or a Dimuon version other than 1.
    """

    type: str = attrs.field(default="adamw", validator=v.str_field(nonempty=True))
    version: int | None = attrs.field(default=None, validator=v.int_field(optional=True))

    def __attrs_post_init__(self) -> None:
        if self.type == "adamw" and self.version is not None:
            raise ValidationError("adamw takes no version", field="OptimizerConfig.version")
        if self.type == "dimuon":
            if self.version is None:
                object.__setattr__(self, "version", DIMUON_VERSION)
            elif self.version != DIMUON_VERSION:
                raise ValidationError(
                    f"dimuon supports version {DIMUON_VERSION}, got {self.version}",
                    field="OptimizerConfig.version",
                )


@attrs.frozen(kw_only=True, field_transformer=typed)
class AdamParams:
    """AdamW step parameters (decoupled weight decay; ``grad_clip_norm`` 0 means no clipping)."""

    learning_rate: float = attrs.field(
        default=ADAM_LEARNING_RATE, validator=v.float_field(minimum=0)
    )
    beta1: float = attrs.field(default=ADAM_BETA1, validator=v.float_field(minimum=0, below=1))
    beta2: float = attrs.field(default=ADAM_BETA2, validator=v.float_field(minimum=0, below=1))
    eps: float = attrs.field(default=ADAM_EPS, validator=v.float_field(above=0))
    weight_decay: float = attrs.field(default=0.0, validator=v.float_field(minimum=0))
    grad_clip_norm: float = attrs.field(default=0.0, validator=v.float_field(minimum=0))

    def __attrs_post_init__(self) -> None:
        v.set_floats(
            self, "learning_rate", "beta1", "beta2", "eps", "weight_decay", "grad_clip_norm"
        )


@attrs.frozen(kw_only=True, field_transformer=typed)
class DimuonParams:
    """Dimuon step parameters, for models created with ``OptimizerConfig(type="dimuon")``.

    Args:
        learning_rate: step size (>= 0; required): the learning rate applied to an update
            direction of Frobenius norm ``sqrt(rank)`` per LoRA matrix.
        grad_clip_norm: largest global gradient norm; 0 or less disables clipping.
        beta1: momentum coefficient (an exponential moving average of gradients), in [0, 1).
    """

    learning_rate: float = attrs.field(validator=v.float_field(minimum=0))
    grad_clip_norm: float = attrs.field(default=0.0, validator=v.float_field())
    beta1: float = attrs.field(default=ADAM_BETA1, validator=v.float_field(minimum=0, below=1))
    type: Literal["dimuon"] = attrs.field(default="dimuon", validator=v.one_of(("dimuon",)))

    def __attrs_post_init__(self) -> None:
        v.set_floats(self, "learning_rate", "grad_clip_norm", "beta1")


#: Step parameters of either optimizer family.
OptimParams: TypeAlias = AdamParams | DimuonParams


# ---------------------------------------------------------------------------- models


@attrs.frozen(kw_only=True, field_transformer=typed)
class CreateModelRequest:
    """``POST /api/v1/create_model`` (answers with a future of :class:`CreateModelResponse`)."""

    session_id: str = attrs.field(validator=v.str_field(nonempty=True))
    model_seq_id: int = attrs.field(validator=v.int_field(minimum=0))
    base_model: str = attrs.field(validator=v.str_field(nonempty=True))
    user_metadata: dict[str, Any] | None = attrs.field(
        default=None, validator=v.str_mapping(optional=True)
    )
    lora_config: LoraConfig | None = attrs.field(
        default=None, validator=v.instance_of(LoraConfig, optional=True)
    )
    optimizer_config: OptimizerConfig = attrs.field(
        factory=OptimizerConfig, validator=v.instance_of(OptimizerConfig)
    )
    type: Literal["create_model"] = attrs.field(
        default="create_model", validator=v.one_of(("create_model",))
    )


@attrs.frozen(kw_only=True, field_transformer=typed)
class CreateModelResponse:
    """Result of a create_model future."""

    model_id: str
    type: Literal["create_model"] = "create_model"


@attrs.frozen(kw_only=True, field_transformer=typed)
class GetInfoRequest:
    """``POST /api/v1/get_info``."""

    model_id: str = attrs.field(validator=v.str_field(nonempty=True))
    type: Literal["get_info"] = attrs.field(default="get_info", validator=v.one_of(("get_info",)))


@attrs.frozen(kw_only=True, field_transformer=typed)
class ModelData:
    """What a model is: architecture, base model name, tokenizer id."""

    arch: str | None = None
    model_name: str | None = None
    tokenizer_id: str | None = None


@attrs.frozen(kw_only=True, field_transformer=typed)
class GetInfoResponse:
    """Answer of get_info."""

    model_id: str
    model_data: ModelData
    optimizer_config: OptimizerConfig = attrs.field(factory=OptimizerConfig)
    is_lora: bool | None = None
    lora_rank: int | None = None
    model_name: str | None = None
    type: Literal["get_info"] | None = None


@attrs.frozen(kw_only=True, field_transformer=typed)
class UnloadModelRequest:
    """``POST /api/v1/unload_model`` (older servers; answers with a future)."""

    model_id: str = attrs.field(validator=v.str_field(nonempty=True))
    type: Literal["unload_model"] = attrs.field(
        default="unload_model", validator=v.one_of(("unload_model",))
    )


@attrs.frozen(kw_only=True, field_transformer=typed)
class UnloadModelResponse:
    """Result of an unload_model future."""

    model_id: str
    type: Literal["unload_model"] | None = None


# ---------------------------------------------------------------------------- training


def _to_data(data: Iterable[Datum]) -> tuple[Datum, ...]:
    if isinstance(data, str | bytes | Datum) or not isinstance(data, Iterable):
        raise ValidationError(
            f"expected a list of Datum, got {v.type_name(data)}", field="ForwardBackwardInput.data"
        )
    result = tuple(data)
    for i, datum in enumerate(result):
        if not isinstance(datum, Datum):
            raise ValidationError(
                f"expected Datum, got {v.type_name(datum)}", field=f"ForwardBackwardInput.data[{i}]"
            )
    return result


def _check_loss_fn_config(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    field = v.path(instance, attribute)
    if not isinstance(value, Mapping):
        raise ValidationError(f"expected a mapping, got {v.type_name(value)}", field=field)
    for key, item in value.items():
        if not isinstance(key, str):
            raise ValidationError(f"keys must be strings, got {v.type_name(key)}", field=field)
        if not isinstance(item, str):
            v.check_number(item, f"{field}.{key}")


@attrs.frozen(kw_only=True, field_transformer=typed)
class ForwardBackwardInput:
    """A batch and the loss to run on it.

    ``loss_fn_config`` holds numbers (e.g. PPO ``clip_low_threshold``) and, for newer servers,
    strings (``{"loss_id": ...}`` for ``custom``).
    """

    data: tuple[Datum, ...] = attrs.field(converter=_to_data)
    loss_fn: LossFnType = attrs.field(validator=v.str_field(nonempty=True))
    loss_fn_config: Mapping[str, float | str] | None = attrs.field(
        default=None, validator=_check_loss_fn_config
    )


@attrs.frozen(kw_only=True, field_transformer=typed)
class ForwardBackwardRequest:
    """``POST /api/v1/forward_backward`` (protobuf on the wire; see ``wire``)."""

    forward_backward_input: ForwardBackwardInput = attrs.field(
        validator=v.instance_of(ForwardBackwardInput)
    )
    model_id: str = attrs.field(validator=v.str_field(nonempty=True))
    seq_id: int | None = attrs.field(default=None, validator=v.int_field(optional=True, minimum=0))


@attrs.frozen(kw_only=True, field_transformer=typed)
class ForwardRequest:
    """``POST /api/v1/forward`` (legacy JSON forward-only; newer SDKs send forward_only protos)."""

    forward_input: ForwardBackwardInput = attrs.field(validator=v.instance_of(ForwardBackwardInput))
    model_id: str = attrs.field(validator=v.str_field(nonempty=True))
    seq_id: int | None = attrs.field(default=None, validator=v.int_field(optional=True, minimum=0))


@attrs.frozen(kw_only=True, field_transformer=typed)
class ForwardBackwardOutput:
    """Result of forward / forward_backward.

    Attributes:
        loss_fn_output_type: the output record's type name (e.g. ``"ArrayRecord"``).
        loss_fn_outputs: one ``{name: TensorData}`` per datum, in request order.
        metrics: ``{"name:reduction": value}``, e.g. ``{"loss:sum": 3.2}``.
    """

    loss_fn_output_type: str
    loss_fn_outputs: list[LossFnOutput]
    metrics: dict[str, float] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True, field_transformer=typed)
class OptimStepRequest:
    """``POST /api/v1/optim_step``: exactly one of ``adam_params`` (AdamW models) and
    ``optimizer_params`` (other families, e.g. :class:`DimuonParams`).

    On the wire this is the official SDK's body: AdamParams travel as ``adam_params``, other
    families' parameters as ``optimizer_params``.
    """

    model_id: str = attrs.field(validator=v.str_field(nonempty=True))
    adam_params: AdamParams | None = attrs.field(
        default=None, validator=v.instance_of(AdamParams, optional=True)
    )
    optimizer_params: DimuonParams | None = attrs.field(
        default=None, validator=v.instance_of(DimuonParams, optional=True)
    )
    seq_id: int | None = attrs.field(default=None, validator=v.int_field(optional=True, minimum=0))
    type: Literal["optim_step"] = attrs.field(
        default="optim_step", validator=v.one_of(("optim_step",))
    )

    def __attrs_post_init__(self) -> None:
        if (self.adam_params is None) == (self.optimizer_params is None):
            raise ValidationError(
                "give exactly one of adam_params (AdamParams) and optimizer_params (DimuonParams)",
                field="OptimStepRequest.adam_params",
            )

    @classmethod
    def of(cls, params: OptimParams, model_id: str, seq_id: int | None = None) -> OptimStepRequest:
        """The request for ``params`` of either family, in the right field."""
        if isinstance(params, DimuonParams):
            return cls(optimizer_params=params, model_id=model_id, seq_id=seq_id)
        return cls(adam_params=params, model_id=model_id, seq_id=seq_id)

    @property
    def optim_params(self) -> OptimParams:
        """The step parameters, whichever family."""
        params = self.adam_params if self.adam_params is not None else self.optimizer_params
        assert params is not None  # __attrs_post_init__ guarantees one
        return params


@attrs.frozen(kw_only=True, field_transformer=typed)
class OptimStepResponse:
    """Result of an optim_step future."""

    metrics: dict[str, float] | None = None
