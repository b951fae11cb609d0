"""A real LoRA train-then-sample flow through tinkex_actors on the torch engine."""

from __future__ import annotations

import pytest
from _servers import ServerHandle

from tinkex_actors import Config, ServiceClient, types

from .conftest import BASE_MODEL, datum

pytestmark = pytest.mark.torch

SEQUENCE = [5, 17, 33, 80, 120, 7, 64, 99, 250, 31, 12, 300]
ADAM = types.AdamParams(learning_rate=5e-3)


def test_train_then_sample_the_memorized_sequence(torch_server: ServerHandle) -> None:
    config = Config(api_key=torch_server.api_key, base_url=torch_server.base_url)
    with ServiceClient(config) as service:
        training = service.create_lora_training_client(
            BASE_MODEL, {"rank": 8, "seed": 0}, timeout=120
        )
        tokenizer = training.get_tokenizer()
        ids = tokenizer.encode("the quick brown fox")
        assert ids
        assert tokenizer.decode(ids).strip() == "the quick brown fox"
        prompt = types.ModelInput.from_ints(SEQUENCE[:4])
        base = service.create_sampling_client(base_model=BASE_MODEL, timeout=60)
        target = types.ModelInput.from_ints(SEQUENCE)
        before = base.compute_logprobs(target).result(timeout=60)
        losses = []
        for _ in range(12):
            step = training.forward_backward([datum(SEQUENCE)], "cross_entropy")
            training.optim_step(ADAM)  # pipelined: not waiting for the step's result
            losses.append(step.result(timeout=120).metrics["loss:sum"])
        assert losses[-1] < 0.5 * losses[0], losses
        tuned = training.save_weights_and_get_sampling_client(timeout=120)
        assert tuned.get_tokenizer().encode("hello") == tokenizer.encode("hello")
        after = tuned.compute_logprobs(target).result(timeout=60)
        assert sum(after[1:]) > sum(before[1:])  # type: ignore[arg-type]
        greedy = types.SamplingParams(max_tokens=4, temperature=0.0)
        sampled = tuned.sample(prompt, greedy).result(timeout=60).sequences[0].tokens
        # The memorized continuation comes out greedily.
        assert sampled == SEQUENCE[4:8], sampled
        saved = training.save_weights_for_sampler("memorized").result(timeout=120)
        assert saved.path is not None
        from_path = service.create_sampling_client(model_path=saved.path, timeout=60)
        again = from_path.sample(prompt, greedy).result(timeout=60).sequences[0].tokens
        assert again == sampled
