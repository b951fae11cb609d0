"""The clients a benchmark worker process can drive, all doing the same work.

* :class:`Ours`: ``tinkex_actors`` (ServiceClient / TrainingClient / SamplingClient,
  blocking ``.result()`` on the ActorFutures).
* :class:`Official`: the official ``tinker`` SDK 0.38 through its documented blocking API
  (``ServiceClient``, ``create_*_client(...).result()``, ``forward_backward(...).result()``,
  ``sample(...).result()``). Its calls run on the SDK's own background asyncio loop; the
  calling thread submits and waits, as a user's program does.

The floors (the same work by hand, no SDK) are in :mod:`bench._floors`; the worker's
registry of drivers by name is :data:`bench._worker.DRIVERS`.

Every driver makes its own session, model and sampler on the server, so drivers never share
a seq_id sequence. Operations (``fb``, ``optim``, ``sample``, ``step``, ``fanout``, ``mixed``)
block until their results are in; ``submit_samples`` returns at once and ``await_samples``
collects what it submitted (the latency workload).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench._common import MODEL

TIMEOUT = 120.0
#: The latency workload's waits: thousands of samples of seconds each, in a slow client.
LOAD_TIMEOUT = 900.0
#: Samples per round of the footprint's mixed requests (with one forward_backward and one
#: optim_step).
MIXED_SAMPLES = 8
JSON = "application/json"
PROTO = "application/x-protobuf"


@dataclass(frozen=True)
class Spec:
    """The work every driver does (the same numbers for each).

    Attributes:
        datums / tokens: the forward_backward batch (cross_entropy, weights all 1).
        prompt_tokens / max_tokens: the sample's prompt length and new tokens.
        rank: LoRA rank of the model.
        threads: threads our SDK fans samples out from.
        training / sampling: which clients to create.
    """

    datums: int = 1
    tokens: int = 16
    prompt_tokens: int = 4
    max_tokens: int = 8
    rank: int = 8
    threads: int = 32
    training: bool = True
    sampling: bool = True
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def batch(self) -> list[list[int]]:
        """``datums`` sequences of ``tokens + 1`` ids in the tiny model's vocabulary."""
        rng = random.Random(self.seed)
        width = self.tokens + 1
        return [[rng.randrange(3, 2048) for _ in range(width)] for _ in range(self.datums)]

    def prompt(self) -> list[int]:
        """The sampling prompt."""
        rng = random.Random(self.seed + 1)
        return [rng.randrange(3, 2048) for _ in range(self.prompt_tokens)]


def _fan(n: int, threads: int, submit_and_wait: Callable[[int], int]) -> int:
    """Run ``submit_and_wait(k)`` on ``threads`` threads at once (k: that thread's share)."""
    shares = [n // threads + (1 if i < n % threads else 0) for i in range(threads)]
    done = [0] * threads
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def work(i: int) -> None:
        try:
            start.wait()
            done[i] = submit_and_wait(shares[i])
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    if errors:
        raise errors[0]
    return sum(done)


# ------------------------------------------------------------------------------ ours
class Ours:
    """tinkex_actors."""

    def setup(self, base_url: str, api_key: str, spec: Spec) -> None:
        from tinkex_actors import Config, ServiceClient, types

        self.spec = spec
        self.service = ServiceClient(Config(api_key=api_key, base_url=base_url))
        if spec.training:
            self.training = self.service.create_lora_training_client(
                MODEL, {"rank": spec.rank, "seed": spec.seed}, timeout=TIMEOUT
            )
            self.data = [
                types.Datum(
                    types.ModelInput.from_ints(seq[:-1]),
                    {"target_tokens": seq[1:], "weights": [1.0] * spec.tokens},
                )
                for seq in spec.batch()
            ]
            self.adam = types.AdamParams(learning_rate=1e-4)
        if spec.sampling:
            self.sampler = self.service.create_sampling_client(base_model=MODEL, timeout=TIMEOUT)
            self.prompt = types.ModelInput.from_ints(spec.prompt())
            self.params = types.SamplingParams(max_tokens=spec.max_tokens)

    def fb(self) -> None:
        self.training.forward_backward(self.data, "cross_entropy").result(TIMEOUT)

    def optim(self) -> None:
        self.training.optim_step(self.adam).result(TIMEOUT)

    def sample(self) -> None:
        self.sampler.sample(self.prompt, self.params).result(TIMEOUT)

    def step(self, timeout: float = TIMEOUT) -> None:
        fb = self.training.forward_backward(self.data, "cross_entropy")
        optim = self.training.optim_step(self.adam)
        fb.result(timeout)
        optim.result(timeout)

    def submit_samples(self, n: int) -> list[Any]:
        return [self.sampler.sample(self.prompt, self.params) for _ in range(n)]

    def await_samples(self, futures: list[Any]) -> int:
        return sum(len(f.result(LOAD_TIMEOUT).sequences) for f in futures)

    def fanout(self, n: int) -> int:
        sampler, prompt, params = self.sampler, self.prompt, self.params

        def share(k: int) -> int:
            futures = [sampler.sample(prompt, params) for _ in range(k)]
            return sum(len(f.result(TIMEOUT).sequences) for f in futures)

        return _fan(n, self.spec.threads, share)

    def mixed(self, n: int) -> int:
        done = 0
        while done < n:
            futures = [
                self.training.forward_backward(self.data, "cross_entropy"),
                self.training.optim_step(self.adam),
                *(self.sampler.sample(self.prompt, self.params) for _ in range(MIXED_SAMPLES)),
            ]
            for future in futures:
                future.result(TIMEOUT)
            done += len(futures)
        return done

    def close(self) -> None:
        self.service.close()


# ------------------------------------------------------------------------------ official
class Official:
    """The official ``tinker`` SDK, its blocking API."""

    def setup(self, base_url: str, api_key: str, spec: Spec) -> None:
        import tinker
        from tinker import types

        self.spec = spec
        self.service = tinker.ServiceClient(base_url=base_url, api_key=api_key)
        if spec.training:
            self.training = self.service.create_lora_training_client(
                base_model=MODEL, rank=spec.rank, seed=spec.seed
            ).result(TIMEOUT)
            self.data = [
                types.Datum(
                    model_input=types.ModelInput.from_ints(seq[:-1]),
                    loss_fn_inputs={"target_tokens": seq[1:], "weights": [1.0] * spec.tokens},
                )
                for seq in spec.batch()
            ]
            self.adam = types.AdamParams(learning_rate=1e-4)
        if spec.sampling:
            self.sampler = self.service.create_sampling_client(base_model=MODEL).result(TIMEOUT)
            self.prompt = types.ModelInput.from_ints(spec.prompt())
            self.params = types.SamplingParams(max_tokens=spec.max_tokens)

    def fb(self) -> None:
        self.training.forward_backward(self.data, "cross_entropy").result(TIMEOUT)

    def optim(self) -> None:
        self.training.optim_step(self.adam).result(TIMEOUT)

    def sample(self) -> None:
        self.sampler.sample(self.prompt, 1, self.params).result(TIMEOUT)

    def step(self, timeout: float = TIMEOUT) -> None:
        fb = self.training.forward_backward(self.data, "cross_entropy")
        optim = self.training.optim_step(self.adam)
        fb.result(timeout)
        optim.result(timeout)

    def submit_samples(self, n: int) -> list[Any]:
        return [self.sampler.sample(self.prompt, 1, self.params) for _ in range(n)]

    def await_samples(self, futures: list[Any]) -> int:
        return sum(len(f.result(LOAD_TIMEOUT).sequences) for f in futures)

    def fanout(self, n: int) -> int:
        # The SDK's way: submit everything from one thread (its loop runs the requests
        # concurrently), then collect.
        futures = [self.sampler.sample(self.prompt, 1, self.params) for _ in range(n)]
        return sum(len(f.result(TIMEOUT).sequences) for f in futures)

    def mixed(self, n: int) -> int:
        done = 0
        while done < n:
            futures = [
                self.training.forward_backward(self.data, "cross_entropy"),
                self.training.optim_step(self.adam),
                *(self.sampler.sample(self.prompt, 1, self.params) for _ in range(MIXED_SAMPLES)),
            ]
            for future in futures:
                future.result(TIMEOUT)
            done += len(futures)
        return done

    def close(self) -> None:
        self.service.close("success").result(TIMEOUT)
