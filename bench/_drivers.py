"""The clients a benchmark worker process can drive, all doing the same work.

* :class:`Ours`: ``tinkex_actors`` (ServiceClient / TrainingClient / SamplingClient,
  blocking ``.result()`` on the ActorFutures).
* :class:`Official`: the official ``tinker`` SDK 0.38 through its documented blocking API
  (``ServiceClient``, ``create_*_client(...).result()``, ``forward_backward(...).result()``,
  ``sample(...).result()``). Its calls run on the SDK's own background asyncio loop; the
  calling thread submits and waits, as a user's program does.
* :class:`HttpClientFloor` / :class:`RequestsFloor`: the same submit + ``retrieve_future``
  exchanges by hand on one keep-alive ``http.client.HTTPConnection`` / a default
  ``requests.Session``: no validation, no retries, bodies encoded once. The floor.
* :class:`EngineFloor`: the torch engine called in-process (no HTTP at all): the floor of the
  embedded-server workload.

Every driver makes its own session, model and sampler on the server, so drivers never share
a seq_id sequence. Operations (``fb``, ``optim``, ``sample``, ``step``, ``fanout``, ``mixed``)
block until their results are in.
"""

from __future__ import annotations

import abc
import json
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

from bench._common import MODEL

TIMEOUT = 120.0
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

    def step(self) -> None:
        fb = self.training.forward_backward(self.data, "cross_entropy")
        optim = self.training.optim_step(self.adam)
        fb.result(TIMEOUT)
        optim.result(TIMEOUT)

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

    def step(self) -> None:
        fb = self.training.forward_backward(self.data, "cross_entropy")
        optim = self.training.optim_step(self.adam)
        fb.result(TIMEOUT)
        optim.result(TIMEOUT)

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


# ------------------------------------------------------------------------------ floors
class _Floor(abc.ABC):
    """Submit + retrieve_future by hand over one connection (:meth:`open`, :meth:`post`)."""

    @abc.abstractmethod
    def open(self) -> None:
        """Open the connection to ``self.base_url``."""

    @abc.abstractmethod
    def post(
        self, path: str, body: bytes, content_type: str, accept: str
    ) -> tuple[int, str, bytes]:
        """One exchange: status, content type, body."""

    @abc.abstractmethod
    def close_connection(self) -> None:
        """Close the connection."""

    def new_connection(self) -> Self:
        """Another floor of this kind on its own connection to the same server."""
        other = type(self)()
        other.base_url, other.api_key = self.base_url, self.api_key
        other.open()
        return other

    def setup(self, base_url: str, api_key: str, spec: Spec) -> None:
        from tinkex_actors.types import (
            Datum,
            ForwardBackwardInput,
            ForwardBackwardRequest,
            ModelInput,
        )
        from tinkex_actors.wire import encode_forward_backward_request
        from tinkex_actors.wire._protowriter import tag, varint

        self.base_url, self.api_key, self.spec = base_url, api_key, spec
        self._varint = varint
        self._seq_tag = tag(2, 0)
        self.open()
        session = self.call("/api/v1/create_session", {"tags": [], "sdk_version": "bench"})
        self.session_id = session["session_id"]
        self.seq = 1
        if spec.training:
            created = self.call(
                "/api/v1/create_model",
                {
                    "session_id": self.session_id,
                    "model_seq_id": 0,
                    "base_model": MODEL,
                    "lora_config": {"rank": spec.rank, "seed": spec.seed},
                    "type": "create_model",
                },
            )
            self.model_id = self.poll(created["request_id"], False)["model_id"]
            data = [
                Datum(
                    ModelInput.from_ints(seq[:-1]),
                    {"target_tokens": seq[1:], "weights": [1.0] * spec.tokens},
                )
                for seq in spec.batch()
            ]
            # Encoded once, without a seq_id: each call appends its own (as our SDK does).
            self.fb_body = encode_forward_backward_request(
                ForwardBackwardRequest(
                    forward_backward_input=ForwardBackwardInput(data=data, loss_fn="cross_entropy"),
                    model_id=self.model_id,
                )
            )
            self.optim_body = {
                "adam_params": {"learning_rate": 1e-4, "beta1": 0.9, "beta2": 0.95, "eps": 1e-12},
                "model_id": self.model_id,
                "type": "optim_step",
            }
        if spec.sampling:
            sampler = self.call(
                "/api/v1/create_sampling_session",
                {
                    "session_id": self.session_id,
                    "sampling_session_seq_id": 0,
                    "base_model": MODEL,
                    "type": "create_sampling_session",
                },
            )
            self.sampler_id = sampler["sampling_session_id"]
            self.sample_seq = 0
            self.sample_lock = threading.Lock()
            self.sample_body = {
                "prompt": {"chunks": [{"type": "encoded_text", "tokens": spec.prompt()}]},
                "sampling_params": {"max_tokens": spec.max_tokens},
                "num_samples": 1,
                "sampling_session_id": self.sampler_id,
                "type": "sample",
            }

    def call(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        status, _, body = self.post(path, json.dumps(payload).encode(), JSON, JSON)
        if status != 200:
            raise RuntimeError(f"{path}: HTTP {status}: {body[:300]!r}")
        result: dict[str, Any] = json.loads(body)
        return result

    def poll(self, request_id: str, proto: bool) -> Any:
        allow = True
        accept = PROTO if proto else JSON
        while True:
            body = json.dumps({"request_id": request_id, "allow_metadata_only": allow}).encode()
            status, ctype, answer = self.post("/api/v1/retrieve_future", body, JSON, accept)
            if status == 408:
                continue
            if status != 200:
                raise RuntimeError(f"retrieve_future: HTTP {status}: {answer[:300]!r}")
            if ctype.startswith(PROTO):
                return answer
            data = json.loads(answer)
            if isinstance(data, dict) and data.get("type") == "try_again":
                continue
            if isinstance(data, dict) and data.get("status") == "complete_metadata":
                allow = False
                continue
            if isinstance(data, dict) and "error" in data and "category" in data:
                raise RuntimeError(f"request failed: {data}")
            return data

    def submit(self, path: str, body: bytes, content_type: str) -> str:
        status, _, answer = self.post(path, body, content_type, JSON)
        if status != 200:
            raise RuntimeError(f"{path}: HTTP {status}: {answer[:300]!r}")
        request_id: str = json.loads(answer)["request_id"]
        return request_id

    def _submit_fb(self) -> str:
        body = self.fb_body + self._seq_tag + self._varint(self.seq)
        self.seq += 1
        return self.submit("/api/v1/forward_backward", body, PROTO)

    def _submit_optim(self) -> str:
        body = json.dumps({**self.optim_body, "seq_id": self.seq}).encode()
        self.seq += 1
        return self.submit("/api/v1/optim_step", body, JSON)

    def _submit_sample(self, conn: _Floor) -> str:
        with self.sample_lock:
            self.sample_seq += 1
            seq = self.sample_seq
        body = json.dumps({**self.sample_body, "seq_id": seq}).encode()
        return conn.submit("/api/v1/asample", body, JSON)

    def fb(self) -> None:
        self.poll(self._submit_fb(), True)

    def optim(self) -> None:
        self.poll(self._submit_optim(), False)

    def sample(self) -> None:
        self.poll(self._submit_sample(self), True)

    def step(self) -> None:
        fb, optim = self._submit_fb(), self._submit_optim()
        self.poll(fb, True)
        self.poll(optim, False)

    def fanout(self, n: int) -> int:
        # One connection per thread, each thread submitting and polling in a loop.
        def share(k: int) -> int:
            conn = self.new_connection()
            try:
                for _ in range(k):
                    conn.poll(self._submit_sample(conn), True)
            finally:
                conn.close_connection()
            return k

        return _fan(n, self.spec.threads, share)

    def close(self) -> None:
        self.post(
            f"/api/v1/sessions/{self.session_id}/finish",
            json.dumps({"reason": {"type": "success"}, "detail": None}).encode(),
            JSON,
            JSON,
        )
        self.close_connection()


class HttpClientFloor(_Floor):
    """The floor: one ``http.client.HTTPConnection`` (keep-alive, TCP_NODELAY by default)."""

    def open(self) -> None:
        import http.client
        import urllib.parse

        parts = urllib.parse.urlsplit(self.base_url)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 80
        self.conn = http.client.HTTPConnection(self._host, self._port, timeout=TIMEOUT)
        self.headers = {"X-API-Key": self.api_key}

    def post(
        self, path: str, body: bytes, content_type: str, accept: str
    ) -> tuple[int, str, bytes]:
        import http.client

        headers = {**self.headers, "Content-Type": content_type, "Accept": accept}
        try:
            self.conn.request("POST", path, body, headers)
            response = self.conn.getresponse()
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            # The server closed the idle keep-alive connection (uvicorn: after 5 s) while
            # other clients ran: reconnect once, as every pooled client does.
            self.conn.close()
            self.conn.request("POST", path, body, headers)
            response = self.conn.getresponse()
        data = response.read()
        return response.status, response.getheader("content-type") or "", data

    def close_connection(self) -> None:
        self.conn.close()


class RequestsFloor(_Floor):
    """A default ``requests.Session`` (the usual way to use requests)."""

    def open(self) -> None:
        import requests

        self.session = requests.Session()
        self.session.headers["X-API-Key"] = self.api_key

    def post(
        self, path: str, body: bytes, content_type: str, accept: str
    ) -> tuple[int, str, bytes]:
        response = self.session.post(
            self.base_url + path,
            data=body,
            headers={"Content-Type": content_type, "Accept": accept},
            timeout=TIMEOUT,
        )
        return response.status_code, response.headers.get("content-type", ""), response.content

    def close_connection(self) -> None:
        self.session.close()


# ------------------------------------------------------------------------------ engine floor
class EngineFloor:
    """The torch engine in this process: the same compute with no HTTP and no server."""

    def setup(self, base_url: str, api_key: str, spec: Spec) -> None:
        import tempfile
        from pathlib import Path

        import numpy as np

        from tinkex_actors.server.engine_api import AdamSpec, EngineDatum, LoraSpec, SampleSpec
        from tinkex_actors.server.engines.torch_engine import TorchEngine

        self._tmp = tempfile.TemporaryDirectory(prefix="tinkex-bench-engine-")
        self.engine = TorchEngine(
            data_dir=Path(self._tmp.name), threads=int(spec.extra.get("threads", 0)),
            publish_to_hub=False,
        )  # fmt: skip
        self.engine.start()
        self.engine.create_adapter("bench", MODEL, LoraSpec(rank=spec.rank, seed=spec.seed))
        self.engine.create_sampler("bench-sampler", MODEL, from_model_id="bench")
        self.data = [
            EngineDatum(
                tokens=np.asarray(seq[:-1], dtype=np.int64),
                inputs={
                    "target_tokens": np.asarray(seq[1:], dtype=np.int64),
                    "weights": np.ones(spec.tokens, dtype=np.float32),
                },
            )
            for seq in spec.batch()
        ]
        self.adam = AdamSpec(learning_rate=1e-4)
        self.sample_spec = SampleSpec(prompt=spec.prompt(), max_tokens=spec.max_tokens)

    def fb(self) -> None:
        self.engine.forward_backward("bench", self.data, "cross_entropy", {}, forward_only=False)

    def optim(self) -> None:
        self.engine.optim_step("bench", self.adam)

    def forward(self) -> None:
        self.engine.forward_backward("bench", self.data, "cross_entropy", {}, forward_only=True)

    def step(self) -> None:
        self.fb()
        self.optim()

    def sample(self) -> None:
        self.engine.sample("bench-sampler", self.sample_spec)

    def close(self) -> None:
        self.engine.close()
        self._tmp.cleanup()


DRIVERS: dict[str, type[Any]] = {
    "ours": Ours,
    "official": Official,
    "http.client": HttpClientFloor,
    "requests": RequestsFloor,
    "engine": EngineFloor,
}
