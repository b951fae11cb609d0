"""Request bodies of the JSON endpoints (pydantic; unknown fields are ignored).

Field names and defaults follow protocol §3; the constant ``type`` tags clients send are
accepted and ignored. FastAPI turns validation failures into 400 (see ``app.py``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tinkex_actors._constants import (
    ADAM_BETA1,
    ADAM_BETA2,
    ADAM_EPS,
    ADAM_LEARNING_RATE,
    DEFAULT_LORA_RANK,
    SAMPLING_TEMPERATURE,
    SAMPLING_TOP_K,
    SAMPLING_TOP_P,
)

__all__ = [
    "AdamParamsBody",
    "CreateModelBody",
    "CreateSamplingSessionBody",
    "CreateSessionBody",
    "FinishSessionBody",
    "LoadWeightsBody",
    "LoraConfigBody",
    "ModelIdBody",
    "OptimStepBody",
    "FuturesTargetBody",
    "RetrieveFutureBody",
    "RetrieveFuturesBody",
    "SampleBody",
    "SamplingParamsBody",
    "SaveWeightsBody",
    "SaveWeightsForSamplerBody",
    "SessionIdBody",
    "TtlBody",
    "WeightsInfoBody",
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", protected_namespaces=())


class CreateSessionBody(_Body):
    tags: list[str] = Field(default_factory=list)
    user_metadata: dict[str, Any] | None = None
    sdk_version: str | None = None
    project_id: str | None = None
    display_name: str | None = None


class SessionIdBody(_Body):
    session_id: str


class FinishReason(_Body):
    type: str = "success"


class FinishSessionBody(_Body):
    reason: FinishReason | None = None
    detail: str | None = None


class LoraConfigBody(_Body):
    rank: int = DEFAULT_LORA_RANK
    seed: int | None = None
    train_unembed: bool = True
    train_mlp: bool = True
    train_attn: bool = True


class CreateModelBody(_Body):
    session_id: str
    model_seq_id: int | None = None
    base_model: str
    user_metadata: dict[str, Any] | None = None
    lora_config: LoraConfigBody | None = None
    optimizer_config: dict[str, Any] | None = None


class ModelIdBody(_Body):
    model_id: str


class AdamParamsBody(_Body):
    learning_rate: float = ADAM_LEARNING_RATE
    beta1: float = ADAM_BETA1
    beta2: float = ADAM_BETA2
    eps: float = ADAM_EPS
    weight_decay: float = 0.0
    grad_clip_norm: float = 0.0


class OptimStepBody(_Body):
    model_id: str
    seq_id: int | None = None
    adam_params: AdamParamsBody | None = None
    optimizer_params: dict[str, Any] | None = None


class SaveWeightsBody(_Body):
    model_id: str
    path: str | None = None
    seq_id: int | None = None
    ttl_seconds: int | None = None
    overwrite: bool = False
    user_metadata: dict[str, Any] | None = None


class SaveWeightsForSamplerBody(_Body):
    model_id: str
    path: str | None = None
    sampling_session_seq_id: int | None = None
    kind: str = "snapshot"
    seq_id: int | None = None
    ttl_seconds: int | None = None
    overwrite: bool = False
    user_metadata: dict[str, Any] | None = None


class LoadWeightsBody(_Body):
    model_id: str | None = None
    seq_id: int | None = None
    session_id: str | None = None
    model_seq_id: int | None = None
    base_model: str | None = None
    user_metadata: dict[str, Any] | None = None
    path: str
    optimizer: bool = False
    #: 0.38, weights-only create-via-load: the new model's optimizer family.
    optimizer_config: dict[str, Any] | None = None


class CreateSamplingSessionBody(_Body):
    session_id: str
    sampling_session_seq_id: int
    base_model: str | None = None
    model_path: str | None = None


class SamplingParamsBody(_Body):
    max_tokens: int | None = None
    seed: int | None = None
    stop: str | list[str] | list[int] | None = None
    temperature: float = SAMPLING_TEMPERATURE
    top_k: int = SAMPLING_TOP_K
    top_p: float = SAMPLING_TOP_P


class SampleBody(_Body):
    num_samples: int = 1
    prompt: dict[str, Any]
    sampling_params: SamplingParamsBody
    base_model: str | None = None
    model_path: str | None = None
    sampling_session_id: str | None = None
    seq_id: int | None = None
    prompt_logprobs: bool | None = None
    topk_prompt_logprobs: int = 0
    topk_sample_logprobs: int = 0
    target_prompt_logprobs: dict[str, Any] | None = None
    prompt_alt_tokens_k: int = 0
    prompt_logprobs_last_n: int | None = None
    #: Accepted; this server records no stability information (see docs/server.md).
    record_stability_info: bool | None = None


class RetrieveFutureBody(_Body):
    request_id: str
    allow_metadata_only: bool = False


class FuturesTargetBody(_Body):
    type: Literal["sampling_session"] = "sampling_session"
    sampling_session_id: str
    cloned_sampler_id: int = Field(default=0, ge=0)


class RetrieveFuturesBody(_Body):
    target: FuturesTargetBody
    prev_cursor: int = Field(default=0, ge=0)
    timeout: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    retrieved_request_ids: list[str] = Field(default_factory=list)


class WeightsInfoBody(_Body):
    tinker_path: str


class TtlBody(_Body):
    ttl_seconds: int | None = None
