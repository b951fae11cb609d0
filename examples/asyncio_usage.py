"""asyncio: await ActorFutures from coroutines without blocking the event loop.

Every call that talks to the server returns an ``ActorFuture``, which is awaitable: the
actor completes it from its own thread and ``await`` resumes the coroutine on the loop. The
``*_async`` creation methods return futures too. Blocking calls (the ServiceClient
constructor, which opens the session, and ``close``) go through ``asyncio.to_thread``.

A ticker task runs during the whole example: it keeps ticking while the coroutines await the
server, showing the loop stays free.

    python examples/asyncio_usage.py

Starts the embedded server (null engine); set ``TINKER_BASE_URL`` / ``TINKER_API_KEY`` (and
``EXAMPLE_BASE_MODEL``) to use another Tinker server.
"""

from __future__ import annotations

import asyncio
import os
import time

from tinkex_actors import Config, ServiceClient, types
from tinkex_actors.server.embedded import config_or_embedded

BASE_MODEL = os.environ.get("EXAMPLE_BASE_MODEL", "tinkex/tiny-llama")


async def ticker(ticks: list[float]) -> None:
    """Records a timestamp every 10 ms, whenever the loop gets to run it."""
    while True:
        ticks.append(time.monotonic())
        await asyncio.sleep(0.01)


async def train_and_sample(config: Config) -> None:
    ticks: list[float] = []
    tick_task = asyncio.create_task(ticker(ticks))
    service = await asyncio.to_thread(ServiceClient, config)  # opens the session
    try:
        # Two training clients created concurrently.
        first, second = await asyncio.gather(
            service.create_lora_training_client_async(BASE_MODEL, {"rank": 8, "seed": 1}),
            service.create_lora_training_client_async(BASE_MODEL, {"rank": 8, "seed": 2}),
        )
        datum = types.Datum(
            types.ModelInput.from_ints([1, 2, 3, 4, 5]),
            {"target_tokens": [2, 3, 4, 5, 6], "weights": [1.0] * 5},
        )
        adam = types.AdamParams(learning_rate=1e-3)
        for step in range(5):
            # Both models step in parallel; each sends optim_step right behind forward_backward.
            backward = [
                client.forward_backward([datum], "cross_entropy") for client in (first, second)
            ]
            optim = [client.optim_step(adam) for client in (first, second)]
            outputs = await asyncio.gather(*backward)
            await asyncio.gather(*optim)
            losses = ", ".join(f"{out.metrics['loss:sum']:.3f}" for out in outputs)
            print(f"step {step}: losses {losses}")

        sampler = await first.save_weights_and_get_sampling_client_async()
        prompt = types.ModelInput.from_ints([1, 2, 3])
        params = types.SamplingParams(max_tokens=8, temperature=1.0)
        # Fan-out: 32 samples in flight, awaited together, with an overall deadline.
        async with asyncio.timeout(60):
            responses = await asyncio.gather(*(sampler.sample(prompt, params) for _ in range(32)))
        lengths = [len(r.sequences[0].tokens) for r in responses]
        print(f"{len(responses)} samples, {sum(lengths)} tokens")
    finally:
        await asyncio.to_thread(service.close)
        tick_task.cancel()
    seconds = ticks[-1] - ticks[0]
    print(f"the ticker ran {len(ticks)} times in {seconds:.2f} s while we awaited the server")


def main() -> None:
    # The embedded server starts and stops outside the event loop (it blocks while starting).
    with config_or_embedded("null") as config:
        asyncio.run(train_and_sample(config))


if __name__ == "__main__":
    main()
