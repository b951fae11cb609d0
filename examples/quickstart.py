"""Quick start: train a LoRA adapter for a few steps, then sample from it.

The same code as the README. It starts the embedded server (torch engine, the tiny
``tinkex/tiny-llama`` model) for the length of the ``with`` block; set ``TINKER_BASE_URL`` and
``TINKER_API_KEY`` to run it against another Tinker server instead (and ``EXAMPLE_BASE_MODEL``
to a model that server serves).

    python examples/quickstart.py
"""

from __future__ import annotations

import os

from tinkex_actors import ServiceClient, types
from tinkex_actors.server.embedded import config_or_embedded

BASE_MODEL = os.environ.get("EXAMPLE_BASE_MODEL", "tinkex/tiny-llama")


def main() -> None:
    with config_or_embedded("torch") as config, ServiceClient(config) as service:
        training = service.create_lora_training_client(BASE_MODEL, {"rank": 32})
        tokenizer = training.get_tokenizer()
        tokens = tokenizer.encode("The capital of Zorblax is Quintara.")
        datum = types.Datum(
            types.ModelInput.from_ints(tokens[:-1]),
            {"target_tokens": tokens[1:], "weights": [1.0] * (len(tokens) - 1)},
        )
        for step in range(20):
            backward = training.forward_backward([datum], "cross_entropy")  # an ActorFuture
            training.optim_step(types.AdamParams(learning_rate=5e-3))  # sent without waiting
            print(f"step {step}: loss {backward.result().metrics['loss:sum']:.2f}")
        sampler = training.save_weights_and_get_sampling_client()
        prompt = types.ModelInput.from_ints(tokenizer.encode("The capital of Zorblax is"))
        answer = sampler.sample(prompt, types.SamplingParams(max_tokens=8, temperature=0.0))
        print("sample:", repr(tokenizer.decode(answer.result().sequences[0].tokens)))


if __name__ == "__main__":
    main()
