"""The official tinker 0.38 SDK end to end against the null-engine server.

The shared null server announces two-datum forward_backward chunks and zstd bodies, so the
SDK sends chunks concurrently (first chunk last) and compressed: the server must order them.
"""

from __future__ import annotations

import itertools
import math

import pytest
import tinker
from _servers import ServerHandle
from tinker import types

from ._helpers import MODEL
from ._sdk import ce_datum, rest_client, service_client

DATA = [ce_datum([1 + i, 5 + i, 9 + i, 13 + i, 17 + i]) for i in range(5)]


def test_training_flow_and_checkpoints(null_server: ServerHandle) -> None:
    with service_client(null_server) as service:
        training = service.create_lora_training_client(base_model=MODEL, rank=8, seed=1).result()
        info = training.get_info()
        assert info.model_data.model_name == MODEL
        assert info.lora_rank == 8
        losses = []
        for _ in range(4):
            step = training.forward_backward(DATA, "cross_entropy")
            optim = training.optim_step(types.AdamParams(learning_rate=1e-3))
            out = step.result()
            assert len(out.loss_fn_outputs) == len(DATA)  # three chunks recombined in order
            assert [o["logprobs"].shape for o in out.loss_fn_outputs] == [[4]] * len(DATA)
            losses.append(out.metrics["loss:sum"])
            assert "grad_norm:mean" in optim.result().metrics
        assert all(b < a for a, b in itertools.pairwise(losses)), losses

        forward = training.forward(DATA[:1], "cross_entropy").result()
        assert forward.loss_fn_outputs[0]["logprobs"].shape == [4]

        state = training.save_state("sdk-state").result()
        assert state.path == f"tinker://{training.model_id}/weights/sdk-state"
        after_save = training.forward(DATA, "cross_entropy").result().metrics["loss:sum"]
        training.forward_backward(DATA, "cross_entropy").result()
        training.optim_step(types.AdamParams(learning_rate=1e-3)).result()
        training.load_state(state.path).result()
        reloaded = training.forward(DATA, "cross_entropy").result().metrics["loss:sum"]
        assert math.isclose(reloaded, after_save, rel_tol=1e-9)
        training.load_state_with_optimizer(state.path).result()

        # Restore into new clients (create-via-load), with and without the optimizer state.
        with_opt = service.create_training_client_from_state_with_optimizer(state.path).result()
        weights_only = service.create_training_client_from_state(state.path).result()
        for client in (with_opt, weights_only):
            assert client.model_id != training.model_id
            assert client.get_info().lora_rank == 8
            restored = client.forward(DATA, "cross_entropy").result().metrics["loss:sum"]
            assert math.isclose(restored, after_save, rel_tol=1e-9)
        losses_after = []
        for client in (training, with_opt, weights_only):
            client.forward_backward(DATA, "cross_entropy").result()
            client.optim_step(types.AdamParams(learning_rate=1e-3)).result()
            losses_after.append(client.forward(DATA, "cross_entropy").result().metrics["loss:sum"])
        assert losses_after[0] == losses_after[1]  # same weights, same optimizer state
        assert losses_after[0] != losses_after[2]  # fresh optimizer state steps differently


def test_sampling_every_option(null_server: ServerHandle) -> None:
    prompt = types.ModelInput.from_ints([3, 4, 5, 6])
    with service_client(null_server) as service:
        training = service.create_lora_training_client(base_model=MODEL, rank=4).result()
        saved = training.save_weights_for_sampler("sdk-sampler").result()
        assert saved.path == f"tinker://{training.model_id}/sampler_weights/sdk-sampler"
        from_path = service.create_sampling_client(model_path=saved.path).result()
        from_base = service.create_sampling_client(base_model=MODEL).result()
        assert from_path.get_base_model() == MODEL
        params = types.SamplingParams(max_tokens=6, temperature=0.7, top_p=0.9, top_k=50, seed=42)
        for sampler in (from_path, from_base):
            first = sampler.sample(
                prompt, 3, params, include_prompt_logprobs=True, topk_prompt_logprobs=3
            ).result()
            again = sampler.sample(prompt, 3, params).result()
            assert [s.tokens for s in first.sequences] == [s.tokens for s in again.sequences]
            assert len(first.sequences) == 3
            assert all(len(s.tokens) == 6 and len(s.logprobs or []) == 6 for s in first.sequences)
            assert {s.stop_reason for s in first.sequences} == {"length"}
            assert len({s.sequence_id for s in first.sequences}) == 3
            assert first.prompt_logprobs is not None
            assert first.prompt_logprobs[0] is None
            assert len(first.prompt_logprobs) == 4
            assert first.topk_prompt_logprobs is not None
            assert first.topk_prompt_logprobs[0] is None
            assert [len(row or []) for row in first.topk_prompt_logprobs[1:]] == [3, 3, 3]
        greedy = types.SamplingParams(max_tokens=8, temperature=0.0)
        stop_token = from_base.sample(prompt, 1, greedy).result().sequences[0].tokens[2]
        stopped = (
            from_base.sample(
                prompt, 1, types.SamplingParams(max_tokens=8, temperature=0.0, stop=[stop_token])
            )
            .result()
            .sequences[0]
        )
        assert stopped.stop_reason == "stop"
        assert stopped.tokens[-1] == stop_token
        with_strings = from_base.sample(
            prompt, 2, types.SamplingParams(max_tokens=2, stop=["\n\n"], seed=3)
        ).result()
        assert len(with_strings.sequences) == 2
        scores = from_path.compute_logprobs(prompt).result()
        assert scores[0] is None
        assert len(scores) == 4
        assert all(s is not None and s < 0 for s in scores[1:])
        live = training.save_weights_and_get_sampling_client().result()
        assert len(live.sample(prompt, 1, params).result().sequences[0].tokens) == 6


def test_rest_client_calls(null_server: ServerHandle) -> None:
    rest = rest_client(null_server)
    other = rest_client(null_server, null_server.other_api_key)
    with service_client(null_server) as service:
        training = service.create_lora_training_client(base_model=MODEL, rank=4).result()
        run_id = training.model_id
        state = training.save_state("rest-state").result().path
        sampler = training.save_weights_for_sampler("rest-sampler").result().path
        capabilities = service.get_server_capabilities()
        assert MODEL in [m.model_name for m in capabilities.supported_models]

    run = rest.get_training_run(run_id).result()
    assert run.training_run_id == run_id
    assert run.last_checkpoint is not None
    assert run.last_checkpoint.tinker_path == state
    assert run.last_sampler_checkpoint is not None
    assert run.last_sampler_checkpoint.tinker_path == sampler
    assert rest.get_training_run_by_tinker_path(state).result().training_run_id == run_id
    runs = rest.list_training_runs(limit=100).result()
    assert run_id in [r.training_run_id for r in runs.training_runs]
    assert runs.cursor.total_count >= 1
    listed = rest.list_checkpoints(run_id).result()
    assert {c.tinker_path for c in listed.checkpoints} == {state, sampler}
    assert {c.checkpoint_type for c in listed.checkpoints} == {"training", "sampler"}
    mine = rest.list_user_checkpoints(limit=2, offset=0).result()
    assert mine.cursor is not None
    assert mine.cursor.limit == 2
    assert len(mine.checkpoints) == 2
    info = rest.get_weights_info_by_tinker_path(state).result()
    assert info.base_model == MODEL
    assert info.lora_rank == 4

    rest.publish_checkpoint_from_tinker_path(sampler).result()
    assert other.get_weights_info_by_tinker_path(sampler).result().base_model == MODEL
    with pytest.raises(tinker.NotFoundError):
        other.get_weights_info_by_tinker_path(state).result()
    rest.unpublish_checkpoint_from_tinker_path(sampler).result()
    with pytest.raises(tinker.NotFoundError):
        other.get_weights_info_by_tinker_path(sampler).result()
    rest.delete_checkpoint_from_tinker_path(sampler).result()
    remaining = rest.list_checkpoints(run_id).result()
    assert [c.tinker_path for c in remaining.checkpoints] == [state]
    sessions = rest.list_sessions(limit=100).result()
    session_id = run_id.split(":")[0]
    assert session_id in sessions.sessions
    assert run_id in rest.get_session(session_id).result().training_run_ids


def test_other_key_cannot_use_my_model(null_server: ServerHandle) -> None:
    with (
        service_client(null_server) as mine,
        service_client(null_server, null_server.other_api_key) as theirs,
    ):
        training = mine.create_lora_training_client(base_model=MODEL, rank=4).result()
        path = training.save_weights_for_sampler("private").result().path
        with pytest.raises(tinker.NotFoundError):
            theirs.create_sampling_client(model_path=path).result()
