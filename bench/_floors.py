"""The floors: the same work as the SDKs, done by hand with no SDK at all.

* :class:`HttpClientFloor` / :class:`RequestsFloor`: the same submit + ``retrieve_future``
  exchanges by hand on one keep-alive ``http.client.HTTPConnection`` / a default
  ``requests.Session``: no validation, no retries, bodies encoded once. The floor.
* :class:`EngineFloor`: the torch engine called in-process (no HTTP at all): the floor of the
  embedded-server workload.
"""

from __future__ import annotations

import abc
import concurrent.futures
import json
import threading
import time
from typing import Any, Self

from bench._common import MODEL
from bench._drivers import JSON, PROTO, TIMEOUT, Spec, _fan

__all__ = ["EngineFloor", "HttpClientFloor", "RequestsFloor"]


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
            self.futures_cursor = 0
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

    def burst(self, n: int) -> dict[str, float]:
        """The latency workload's bare client: ``n`` samples submitted over ``spec.threads``
        connections at once, their completions awaited with one ``retrieve_futures`` long
        poll at a time, then every payload fetched over the same connections.

        Returns ``submit_s`` (until the last asample was answered), ``wall_s`` and
        ``samples``.
        """
        started = time.perf_counter()
        shares = [
            n // self.spec.threads + (i < n % self.spec.threads) for i in range(self.spec.threads)
        ]
        conns = [self.new_connection() for _ in shares]
        try:
            with concurrent.futures.ThreadPoolExecutor(len(conns)) as pool:
                ids = list(
                    pool.map(
                        lambda job: [self._submit_sample(job[0]) for _ in range(job[1])],
                        zip(conns, shares, strict=True),
                    )
                )
                submitted = time.perf_counter()
                self._await_completions(sum(len(batch) for batch in ids))
                results = pool.map(
                    lambda job: [job[0].poll(r, True) for r in job[1]], zip(conns, ids, strict=True)
                )
                done = sum(len(batch) for batch in results)
        finally:
            for conn in conns:
                conn.close_connection()
        return {
            "submit_s": submitted - started,
            "wall_s": time.perf_counter() - started,
            "samples": done,
        }

    def _await_completions(self, n: int) -> None:
        """``retrieve_futures`` on this connection until ``n`` completions were reported."""
        cursor, seen = self.futures_cursor, 0
        while seen < n:
            body = {
                "target": {"type": "sampling_session", "sampling_session_id": self.sampler_id},
                "prev_cursor": cursor,
            }
            answer = self.call("/api/v1/retrieve_futures", body)
            seen += len(answer["completions"])
            cursor = answer["cursor"]
        self.futures_cursor = cursor

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
