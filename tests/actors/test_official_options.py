"""0.38 call options and behaviours of the official SDK, through our SDK on the null server:
sampling fields, ``record_stability_info``, save options, server-issued paths passed through,
``SamplingClient.create_async``."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
import pytest

from tinkex_actors import Config, SamplingClient, ServiceClient, TrainingClient, types
from tinkex_actors.errors import APIStatusError, ConflictError, InvalidTinkerPathError
from tinkex_actors.testing import FakeBackend
from tinkex_actors.transport import RawResponse

from ._backends import Recorder
from .conftest import BASE_MODEL

PROMPT = types.ModelInput.from_ints([3, 4, 5, 6])
#: A path in another server's form (no kind segment), as an independent Tinker server issues.
FOREIGN_PATH = "tinker://model_21e8fdeb/my-weights"


def _asample_body(recorder: Recorder) -> dict[str, object]:
    sent = recorder.sent("/asample")
    assert sent
    body = orjson.loads(sent[-1].body or b"{}")
    assert isinstance(body, dict)
    return body


def test_asample_carries_the_fields_the_official_sdk_sends(config: Config) -> None:
    recorder = Recorder(config)
    with ServiceClient(config, backend=recorder) as service:
        sampler = service.create_sampling_client(base_model=BASE_MODEL, timeout=30)
        sampler.sample(PROMPT, types.SamplingParams(max_tokens=2)).result(timeout=30)
    body = _asample_body(recorder)
    # 0.38 always sends these (defaults included; record_stability_info false).
    assert body["record_stability_info"] is False
    assert body["prompt_logprobs"] is False
    assert (body["topk_prompt_logprobs"], body["topk_sample_logprobs"]) == (0, 0)
    assert body["prompt_alt_tokens_k"] == 0
    assert "target_prompt_logprobs" not in body  # None is left out, as pydantic does


def test_sampling_fields_reach_the_engine_and_come_back(config: Config) -> None:
    with ServiceClient(config) as service:
        sampler = service.create_sampling_client(base_model=BASE_MODEL, timeout=30)
        targets = types.TensorData([7, -1, 8, 9, -1, -1], "int64", [3, 2])
        response = sampler.sample(
            PROMPT,
            types.SamplingParams(max_tokens=3, stop=[]),
            prompt_logprobs=True,
            topk_sample_logprobs=2,
            target_prompt_logprobs=targets,
            prompt_alt_tokens_k=2,
        ).result(timeout=30)
    sequence = response.sequences[0]
    assert sequence.topk_logprobs is not None
    assert len(sequence.topk_logprobs) == len(sequence.tokens)
    assert response.target_prompt_logprobs is not None
    assert response.prompt_alt_tokens is not None


def test_save_state_options(training: TrainingClient, service: ServiceClient) -> None:
    saved = training.save_state("opts", user_metadata={"step": "1"}).result(timeout=30)
    with pytest.raises(ConflictError):  # at once: a conflict is never retried
        training.save_state("opts").result(timeout=10)
    again = training.save_state("opts", overwrite=True).result(timeout=30)
    assert again.path == saved.path
    sampler_path = (
        training.save_weights_for_sampler("opts-s", user_metadata={"kind": "eval"})
        .result(timeout=30)
        .path
    )
    rest = service.create_rest_client()
    try:
        listed = {c.tinker_path: c for c in rest.list_checkpoints(training.model_id).checkpoints}
    finally:
        rest.close()
    assert sampler_path is not None
    assert listed[sampler_path].user_metadata == {"kind": "eval"}


def test_create_async_is_the_service_clients_create(service: ServiceClient) -> None:
    futures = [SamplingClient.create_async(service, base_model=BASE_MODEL) for _ in range(3)]
    samplers = [future.result(timeout=30) for future in futures]
    assert len({s.sampler_id for s in samplers}) == 3
    assert all(s.base_model == BASE_MODEL for s in samplers)


class _ForeignPaths:
    """In front of the real server: answers as a server that issues ``FOREIGN_PATH``."""

    def __call__(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes | None
    ) -> RawResponse | None:
        if path.endswith("/create_sampling_session"):
            return FakeBackend.reply(200, b'{"sampling_session_id": "foreign-sampler-1"}')
        if path.endswith("/samplers/foreign-sampler-1"):
            answer = {
                "sampler_id": "foreign-sampler-1",
                "base_model": BASE_MODEL,
                "model_path": FOREIGN_PATH,
            }
            return FakeBackend.reply(200, orjson.dumps(answer))
        return None


def test_paths_a_server_issued_are_passed_back_as_they_are(config: Config) -> None:
    recorder = Recorder(config, fault=_ForeignPaths())
    with ServiceClient(config, backend=recorder) as service:
        sampler = service.create_sampling_client(model_path=FOREIGN_PATH, timeout=30)
        assert (sampler.model_path, sampler.base_model) == (FOREIGN_PATH, BASE_MODEL)
        created = orjson.loads(recorder.sent("/create_sampling_session")[0].body or b"{}")
        assert created["model_path"] == FOREIGN_PATH
        training = service.create_lora_training_client(BASE_MODEL, timeout=30)
        with pytest.raises(APIStatusError):  # our server does not know it: its own answer
            training.load_state(FOREIGN_PATH).result(timeout=30)
        loaded = orjson.loads(recorder.sent("/load_weights")[-1].body or b"{}")
        assert loaded["path"] == FOREIGN_PATH
        with pytest.raises(APIStatusError):
            service.create_training_client_from_state(FOREIGN_PATH, timeout=30)
        assert orjson.loads(recorder.sent("/load_weights")[-1].body or b"{}")["path"] == (
            FOREIGN_PATH
        )


@pytest.mark.parametrize(
    "bad", ["model_21e8fdeb/my-weights", "https://example.com/w", "tinker://", "tinker://a b"]
)
def test_what_is_surely_not_a_tinker_path_is_refused_before_sending(
    service: ServiceClient, bad: str
) -> None:
    with pytest.raises(InvalidTinkerPathError):
        service.create_sampling_client(model_path=bad)
    with pytest.raises(InvalidTinkerPathError):
        service.create_training_client_from_state(bad)
