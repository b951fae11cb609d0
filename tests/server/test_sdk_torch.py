"""The official tinker 0.38 SDK end to end against the torch engine (real LoRA training)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from _servers import ServerHandle, session_server
from tinker import types

from ._helpers import MODEL, Api, datum_json
from ._sdk import ce_datum, rest_client, service_client

pytestmark = pytest.mark.torch

#: A small fixed dataset: four short sequences to memorize.
SEQUENCES = [
    [5, 17, 33, 80, 120, 7, 64, 99, 250, 31, 12, 300],
    [44, 9, 18, 27, 36, 45, 54, 63, 72, 81, 90, 99],
    [400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411],
    [1000, 20, 1000, 20, 1000, 20, 1000, 20, 1000, 20, 1000, 20],
]
DATA = [ce_datum(s) for s in SEQUENCES]
ADAM = types.AdamParams(learning_rate=5e-3)


def test_loss_falls_over_20_steps(torch_server: ServerHandle) -> None:
    with service_client(torch_server) as service:
        training = service.create_lora_training_client(base_model=MODEL, rank=8, seed=0).result()
        losses = []
        for _ in range(20):
            step = training.forward_backward(DATA, "cross_entropy")
            training.optim_step(ADAM)
            losses.append(step.result().metrics["loss:sum"])
        assert losses[-1] < 0.5 * losses[0], losses
        falling = sum(b < a for a, b in itertools.pairwise(losses))
        assert falling >= 15, losses


def test_tokenizer_info_and_sampling_options(torch_server: ServerHandle) -> None:
    with service_client(torch_server) as service:
        training = service.create_lora_training_client(base_model=MODEL, rank=4).result()
        info = training.get_info()
        assert info.model_data.model_name == MODEL
        tokenizer = training.get_tokenizer()
        ids = tokenizer.encode("the quick brown fox")
        assert ids
        assert tokenizer.decode(ids).strip() == "the quick brown fox"
        sampler = service.create_sampling_client(base_model=MODEL).result()
        assert sampler.get_tokenizer().encode("hello") == tokenizer.encode("hello")
        prompt = types.ModelInput.from_ints(ids)

        params = types.SamplingParams(max_tokens=8, temperature=0.9, top_p=0.95, top_k=40, seed=123)
        first = sampler.sample(
            prompt, 2, params, include_prompt_logprobs=True, topk_prompt_logprobs=3
        ).result()
        again = sampler.sample(prompt, 2, params).result()
        assert [s.tokens for s in first.sequences] == [s.tokens for s in again.sequences]
        assert len(first.sequences) == 2
        for seq in first.sequences:
            assert 1 <= len(seq.tokens) <= 8
            assert seq.logprobs is not None
            assert len(seq.logprobs) == len(seq.tokens)
            assert seq.stop_reason in ("stop", "length")
        assert first.prompt_logprobs is not None
        assert len(first.prompt_logprobs) == len(ids)
        assert first.prompt_logprobs[0] is None
        assert first.topk_prompt_logprobs is not None
        assert all(len(row or []) == 3 for row in first.topk_prompt_logprobs[1:])

        greedy = types.SamplingParams(max_tokens=10, temperature=0.0, stop=[])
        base = sampler.sample(prompt, 1, greedy).result().sequences[0]
        assert len(base.tokens) == 10
        assert base.stop_reason == "length"
        top1 = sampler.sample(
            prompt, 1, types.SamplingParams(max_tokens=10, top_k=1, seed=9, stop=[])
        ).result()
        assert top1.sequences[0].tokens == base.tokens
        stop_id = base.tokens[3]
        cut = (
            sampler.sample(
                prompt, 1, types.SamplingParams(max_tokens=10, temperature=0.0, stop=[stop_id])
            )
            .result()
            .sequences[0]
        )
        assert cut.stop_reason == "stop"
        assert cut.tokens == base.tokens[: base.tokens.index(stop_id) + 1]
        text = tokenizer.decode(base.tokens)
        stop_text = text[len(text) // 2 :][:2]
        assert stop_text.strip(), text
        by_string = (
            sampler.sample(
                prompt, 1, types.SamplingParams(max_tokens=10, temperature=0.0, stop=[stop_text])
            )
            .result()
            .sequences[0]
        )
        assert by_string.stop_reason == "stop"
        assert len(by_string.tokens) < len(base.tokens)
        assert stop_text in tokenizer.decode(by_string.tokens)


def test_sampler_and_trainer_agree_and_sampling_from_paths(torch_server: ServerHandle) -> None:
    with service_client(torch_server) as service:
        training = service.create_lora_training_client(base_model=MODEL, rank=4, seed=2).result()
        for _ in range(3):
            training.forward_backward(DATA, "cross_entropy")
            training.optim_step(ADAM).result()
        path = training.save_weights_for_sampler("agree").result().path
        sampler = service.create_sampling_client(model_path=path).result()
        tokens = SEQUENCES[0]
        scored = sampler.compute_logprobs(types.ModelInput.from_ints(tokens)).result()
        forward = training.forward([ce_datum(tokens)], "cross_entropy").result()
        expected = forward.loss_fn_outputs[0]["logprobs"].to_numpy()
        assert scored[0] is None
        np.testing.assert_allclose(
            np.array(scored[1:], dtype=np.float64), expected, rtol=1e-4, atol=1e-4
        )
        live = training.save_weights_and_get_sampling_client().result()
        again = live.compute_logprobs(types.ModelInput.from_ints(tokens)).result()
        np.testing.assert_allclose(
            np.array(again[1:], dtype=np.float64), expected, rtol=1e-4, atol=1e-4
        )


def test_rl_losses(torch_server: ServerHandle) -> None:
    with service_client(torch_server) as service:
        training = service.create_lora_training_client(base_model=MODEL, rank=4).result()
        tokens = SEQUENCES[1]
        n = len(tokens) - 1
        datum = types.Datum(
            model_input=types.ModelInput.from_ints(tokens[:-1]),
            loss_fn_inputs={
                "target_tokens": tokens[1:],
                "logprobs": [-5.0] * n,
                "advantages": list(np.linspace(-1.0, 1.0, n)),
            },
        )
        for loss in ("importance_sampling", "ppo", "cispo", "dro"):
            out = training.forward_backward([datum], loss).result()
            assert np.isfinite(out.metrics["loss:sum"]), loss
            assert out.loss_fn_outputs[0]["logprobs"].shape == [n]
        training.optim_step(ADAM).result()


def test_save_state_round_trip_is_exact_across_a_restart(torch_server: ServerHandle) -> None:
    with service_client(torch_server) as service:
        training = service.create_lora_training_client(base_model=MODEL, rank=4, seed=4).result()
        for _ in range(2):
            training.forward_backward(DATA, "cross_entropy")
            training.optim_step(ADAM).result()
        path = training.save_state("exact").result().path
        training.forward_backward(DATA, "cross_entropy")
        training.optim_step(ADAM).result()
        reference = training.forward(DATA, "cross_entropy").result().metrics["loss:sum"]
        run_id = training.model_id

    assert torch_server.restart() == 0
    assert rest_client(torch_server).get_training_run(run_id).result().last_checkpoint is not None
    with service_client(torch_server) as service:
        restored = service.create_training_client_from_state_with_optimizer(path).result()
        restored.forward_backward(DATA, "cross_entropy")
        restored.optim_step(ADAM).result()
        again = restored.forward(DATA, "cross_entropy").result().metrics["loss:sum"]
        assert again == reference  # bit for bit: same engine, same thread count
        weights_only = service.create_training_client_from_state(path).result()
        assert weights_only.get_info().lora_rank == 4


def test_pre_025_json_flow(torch_server: ServerHandle) -> None:
    api = Api(torch_server)
    try:
        session = api.session()
        model = api.create_model(session)
        data = [datum_json(s[:-1], s[1:]) for s in SEQUENCES[:2]]
        first = api.fwdbwd(model, 1, data)["metrics"]["loss:sum"]
        api.optim(model, 2, lr=5e-3)
        second = api.fwdbwd(model, 3, data, forward_only=True)
        assert second["metrics"]["loss:sum"] < first
        assert second["loss_fn_outputs"][0]["logprobs"]["shape"] == [11]
        future = api.ok(
            "/asample",
            {
                "base_model": MODEL,
                "prompt": {"chunks": [{"type": "encoded_text", "tokens": SEQUENCES[0][:4]}]},
                "sampling_params": {"max_tokens": 3, "seed": 1, "stop": []},
            },
        )
        assert len(api.result(future)["sequences"][0]["tokens"]) == 3
    finally:
        api.close()


def test_serves_a_local_model_directory(torch_server: ServerHandle) -> None:
    (snapshot,) = torch_server.hf_home.glob("hub/models--tinkex--tiny-llama/snapshots/*")
    with (
        session_server(
            "torch", extra_args=(f"--model=local/copy={snapshot}",), ready_timeout=120
        ) as server,
        service_client(server) as service,
    ):
        names = [m.model_name for m in service.get_server_capabilities().supported_models]
        assert "local/copy" in names
        training = service.create_lora_training_client(base_model="local/copy", rank=4).result()
        assert training.get_info().model_data.model_name == "local/copy"
        tokenizer = training.get_tokenizer()
        assert tokenizer.encode("hello world")
        out = training.forward_backward(DATA[:2], "cross_entropy").result()
        assert out.metrics["loss:sum"] > 0
        sampler = service.create_sampling_client(base_model="local/copy").result()
        sample = sampler.sample(
            types.ModelInput.from_ints(SEQUENCES[0][:3]), 1, types.SamplingParams(max_tokens=2)
        ).result()
        assert len(sample.sequences[0].tokens) <= 2
