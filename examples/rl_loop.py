"""Reinforcement learning: concurrent sampling fan-out, group-relative advantages, and the
``importance_sampling`` loss.

Each iteration samples a group of completions per prompt from the current policy, all at
once (every ``sample`` call returns an ``ActorFuture`` immediately; ``gather`` waits for the
lot), scores them, and trains on the advantage of each completion over its group's mean
(GRPO style). The sampler's own logprobs go in as ``logprobs``, so the server computes the
importance ratio ``exp(logp_now - logp_sampler)``. A fresh sampling client on the new weights
(``save_weights_and_get_sampling_client``) keeps the loop on-policy.

The reward is deliberately simple: the share of generated tokens that are single ASCII
letters. The tiny model starts near 0.02 and reaches 1.0 within a dozen iterations, by
collapsing onto one letter: a small lesson in reward design.

    python examples/rl_loop.py [--iterations 12]

Starts the embedded server (torch engine); set ``TINKER_BASE_URL`` / ``TINKER_API_KEY`` (and
``EXAMPLE_BASE_MODEL``) to use another Tinker server.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from tinkex_actors import ServiceClient, types
from tinkex_actors.futures import gather
from tinkex_actors.server.embedded import config_or_embedded

BASE_MODEL = os.environ.get("EXAMPLE_BASE_MODEL", "tinkex/tiny-llama")
PROMPTS = ["Once upon a time", "The weather today is", "My favourite colour is", "In the end"]
GROUP = 8  # completions per prompt


def sampling(seed: int) -> types.SamplingParams:
    # stop=[]: always generate max_tokens (no end-of-text stop), so rewards compare.
    return types.SamplingParams(max_tokens=12, temperature=1.0, stop=[], seed=seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=12)
    parser.add_argument("--lr", type=float, default=3e-2)
    args = parser.parse_args()

    with config_or_embedded("torch") as config, ServiceClient(config) as service:
        training = service.create_lora_training_client(BASE_MODEL, {"rank": 16, "seed": 0})
        tokenizer = training.get_tokenizer()
        letters = {
            i
            for i in range(tokenizer.vocab_size)
            if (text := tokenizer.decode([i])).isascii() and text.isalpha() and len(text) == 1
        }

        def reward(tokens: list[int]) -> float:
            return sum(t in letters for t in tokens) / max(1, len(tokens))

        prompts = [types.ModelInput.from_ints(tokenizer.encode(p)) for p in PROMPTS]
        adam = types.AdamParams(learning_rate=args.lr)
        sampler = training.save_weights_and_get_sampling_client()
        first = last = 0.0
        for iteration in range(args.iterations):
            started = time.monotonic()
            # Fan-out: every prompt's group is in flight at once. Seeded, so runs repeat.
            futures = [
                sampler.sample(prompt, sampling(seed=100 * iteration + i), num_samples=GROUP)
                for i, prompt in enumerate(prompts)
            ]
            responses = gather(futures).result()
            sample_seconds = time.monotonic() - started

            data: list[types.Datum] = []
            rewards: list[float] = []
            for prompt, response in zip(prompts, responses, strict=True):
                scores = [reward(seq.tokens) for seq in response.sequences]
                baseline = statistics.fmean(scores)
                rewards += scores
                for seq, score in zip(response.sequences, scores, strict=True):
                    if score == baseline or seq.logprobs is None:
                        continue  # no signal
                    tokens = prompt.to_ints() + seq.tokens
                    pad = prompt.length - 1  # prompt positions: no loss
                    data.append(
                        types.Datum(
                            types.ModelInput.from_ints(tokens[:-1]),
                            {
                                "target_tokens": tokens[1:],
                                "logprobs": [0.0] * pad + list(seq.logprobs),
                                "advantages": [0.0] * pad + [score - baseline] * len(seq.tokens),
                            },
                        )
                    )
            mean = statistics.fmean(rewards)
            first = mean if iteration == 0 else first
            last = mean
            print(
                f"iteration {iteration:2d}: mean reward {mean:.3f} "
                f"({len(rewards)} samples in {sample_seconds:.2f} s, {len(data)} trained)"
            )
            if data:
                training.forward_backward(data, "importance_sampling")
                training.optim_step(adam)
            # Queued behind the step: a sampler on the updated weights.
            sampler = training.save_weights_and_get_sampling_client()

        example = sampler.sample(prompts[0], sampling(seed=0)).result().sequences[0].tokens
        print(f"sample now: {PROMPTS[0]!r} -> {tokenizer.decode(example)!r}")
        print(f"mean reward: {first:.3f} -> {last:.3f}")


if __name__ == "__main__":
    main()
