"""Helpers for the server tests: plain-HTTP clients (what a pre-0.25 JSON client sends),
constants of the conftest's servers, and a clock for the pending-request store."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import requests
import zstandard
from _servers import ServerHandle
from tinker.proto import tinker_public_pb2 as upstream_pb

MODEL = "tinkex/tiny-llama"
API = "/api/v1"
PROTOBUF = "application/x-protobuf"
#: JWT lifetimes (s) of the two ``--jwt-auth`` servers of the conftest: one expires within a
#: test, the other only when a test rotates the signing secret.
JWT_SHORT_TTL = 2
JWT_LONG_TTL = 600
#: The pending-request store's lifetimes (s) in its in-process tests: finished, then delivered.
TTL, DELIVERED_TTL = 3600.0, 60.0


class ShiftedClock:
    """``time.monotonic`` moved forward on demand (records stamp with the real monotonic)."""

    def __init__(self) -> None:
        self.shift = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.shift


def datum_json(
    tokens: list[int], targets: list[int], weights: list[float] | None = None
) -> dict[str, Any]:
    """A legacy JSON Datum for cross_entropy."""
    inputs: dict[str, Any] = {
        "target_tokens": {"data": targets, "dtype": "int64", "shape": [len(targets)]}
    }
    if weights is not None:
        inputs["weights"] = {"data": weights, "dtype": "float32", "shape": [len(weights)]}
    return {
        "model_input": {"chunks": [{"type": "encoded_text", "tokens": tokens}]},
        "loss_fn_inputs": inputs,
    }


def fwdbwd_proto(
    model_id: str,
    seq_id: int,
    data: list[tuple[list[int], list[int], list[float]]],
    *,
    loss_fn: str = "cross_entropy",
    forward_only: bool = False,
) -> bytes:
    """A ForwardBackwardRequest encoded with the official SDK's generated module."""
    message = upstream_pb.ForwardBackwardRequest(
        model_id=model_id, seq_id=seq_id, loss_fn=loss_fn, forward_only=forward_only
    )
    for tokens, targets, weights in data:
        datum = message.data.add()
        datum.model_input.add().encoded_text.tokens = np.asarray(tokens, "<i4").tobytes()
        tt = datum.loss_fn_inputs["target_tokens"]
        tt.dtype = upstream_pb.DTYPE_INT64
        tt.shape.append(len(targets))
        tt.dense = np.asarray(targets, "<i8").tobytes()
        w = datum.loss_fn_inputs["weights"]
        w.dtype = upstream_pb.DTYPE_FLOAT32
        w.shape.append(len(weights))
        w.dense = np.asarray(weights, "<f4").tobytes()
    return message.SerializeToString()


class Api:
    """A requests session speaking to one server as one tenant."""

    def __init__(self, server: ServerHandle, api_key: str | None = None) -> None:
        self.server = server
        self.api_key = api_key or server.api_key
        self.http = requests.Session()

    def close(self) -> None:
        self.http.close()

    def url(self, path: str) -> str:
        return f"{self.server.base_url}{API}{path}"

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"X-API-Key": self.api_key, **kwargs.pop("headers", {})}
        return self.http.request(method, self.url(path), headers=headers, timeout=60, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        if body is not None:
            kwargs["json"] = body
        return self.request("POST", path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def ok(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        reply = self.post(path, body, **kwargs)
        assert reply.status_code == 200, (path, reply.status_code, reply.text)
        return reply.json()

    # ------------------------------------------------------------------ futures
    def poll(
        self, request_id: str, *, proto: bool = False, timeout: float = 60
    ) -> requests.Response:
        """retrieve_future until the answer is not try_again."""
        accept = PROTOBUF if proto else "application/json"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reply = self.post(
                "/retrieve_future",
                {"request_id": request_id, "allow_metadata_only": False},
                headers={"Accept": accept},
            )
            assert reply.status_code == 200, reply.text
            if reply.headers["content-type"].startswith(PROTOBUF):
                return reply
            if reply.json().get("type") != "try_again":
                return reply
        raise AssertionError(f"future {request_id} not done after {timeout}s")

    def result(self, future: dict[str, Any]) -> dict[str, Any]:
        """The JSON result of a future; fails on an error result."""
        body: dict[str, Any] = self.poll(future["request_id"]).json()
        assert "error" not in body, body
        return body

    # ------------------------------------------------------------------ flows
    def session(self) -> str:
        reply = self.ok("/create_session", {"tags": [], "sdk_version": "0.24.0"})
        return str(reply["session_id"])

    def create_model(self, session_id: str, seq: int = 0, rank: int = 4, seed: int = 0) -> str:
        future = self.ok(
            "/create_model",
            {
                "session_id": session_id,
                "model_seq_id": seq,
                "base_model": MODEL,
                "lora_config": {"rank": rank, "seed": seed},
            },
        )
        return str(self.result(future)["model_id"])

    def fwdbwd(
        self, model_id: str, seq: int, data: list[dict[str, Any]], *, forward_only: bool = False
    ) -> dict[str, Any]:
        key = "forward_input" if forward_only else "forward_backward_input"
        path = "/forward" if forward_only else "/forward_backward"
        body = {
            key: {"data": data, "loss_fn": "cross_entropy", "loss_fn_config": None},
            "model_id": model_id,
            "seq_id": seq,
        }
        return self.result(self.ok(path, body))

    def fwdbwd_proto(self, model_id: str, seq: int, body: bytes, *, zstd: bool = False) -> Any:
        headers = {"Content-Type": PROTOBUF}
        if zstd:
            body = zstandard.ZstdCompressor().compress(body)
            headers["Content-Encoding"] = "zstd"
        return self.post("/forward_backward", data=body, headers=headers)

    def optim(self, model_id: str, seq: int, lr: float = 1e-4) -> dict[str, Any]:
        body = {"model_id": model_id, "seq_id": seq, "adam_params": {"learning_rate": lr}}
        return self.result(self.ok("/optim_step", body))

    def save(self, model_id: str, seq: int | None, name: str, **extra: Any) -> str:
        endpoint = "/save_weights_for_sampler" if extra.pop("sampler", False) else "/save_weights"
        future = self.ok(endpoint, {"model_id": model_id, "path": name, "seq_id": seq, **extra})
        return str(self.result(future)["path"])
