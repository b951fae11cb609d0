"""Make server-side state for the REST, download and CLI tests over plain HTTP.

The actor runtime (ServiceClient, TrainingClient) is tested elsewhere; these tests need only
sessions, models, checkpoints and samplers to exist, so they create them with the JSON
endpoints directly (``requests``), as any pre-0.25 client would.
"""

from __future__ import annotations

import http.server
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import requests
from _servers import ServerHandle

MODEL = "tinkex/tiny-llama"
API = "/api/v1"


class Seeder:
    """One tenant of an embedded server, creating things with plain HTTP calls."""

    def __init__(self, server: ServerHandle, api_key: str | None = None) -> None:
        self.server = server
        self.api_key = api_key or server.api_key
        self.http = requests.Session()
        self._seq: dict[str, int] = {}

    def close(self) -> None:
        self.http.close()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        reply = self.http.post(
            f"{self.server.base_url}{API}{path}",
            json=body,
            headers={"X-API-Key": self.api_key},
            timeout=60,
        )
        assert reply.status_code == 200, (path, reply.status_code, reply.text)
        return reply.json()

    def result(self, future: dict[str, Any], timeout: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            body = self.post(
                "/retrieve_future",
                {"request_id": future["request_id"], "allow_metadata_only": False},
            )
            if body.get("type") != "try_again":
                assert "error" not in body, body
                return dict(body)
        raise AssertionError(f"future {future} not done after {timeout}s")

    def session(self) -> str:
        return str(
            self.post("/create_session", {"tags": [], "sdk_version": "0.38.0"})["session_id"]
        )

    def model(self, session_id: str, rank: int = 4) -> str:
        future = self.post(
            "/create_model",
            {
                "session_id": session_id,
                "model_seq_id": self._next(session_id),
                "base_model": MODEL,
                "lora_config": {"rank": rank, "seed": 0},
            },
        )
        return str(self.result(future)["model_id"])

    def _next(self, key: str) -> int:
        self._seq[key] = self._seq.get(key, 0) + 1
        return self._seq[key]

    def save(self, model_id: str, name: str, *, sampler: bool = False) -> str:
        endpoint = "/save_weights_for_sampler" if sampler else "/save_weights"
        body = {"model_id": model_id, "path": name, "seq_id": self._next(model_id)}
        return str(self.result(self.post(endpoint, body))["path"])

    def sampler(self, session_id: str, model_path: str | None = None) -> str:
        body: dict[str, Any] = {
            "session_id": session_id,
            "sampling_session_seq_id": self._next(f"{session_id}:sampler"),
        }
        if model_path is None:
            body["base_model"] = MODEL
        else:
            body["model_path"] = model_path
        return str(self.post("/create_sampling_session", body)["sampling_session_id"])


# ---------------------------------------------------------------------------- a scriptable server
Handler = Callable[[http.server.BaseHTTPRequestHandler], None]


class _Threaded(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    block_on_close = True


class ScriptedServer:
    """A tiny HTTP server on 127.0.0.1 whose answers come from ``routes[path]`` (any method).

    Every request's path and headers are recorded in :attr:`seen` (for checking what a client
    sent, e.g. that no API key reached it).
    """

    def __init__(self) -> None:
        self.routes: dict[str, Handler] = {}
        self.seen: list[tuple[str, dict[str, str]]] = []
        owner = self

        class _Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                path = self.path.split("?", 1)[0]
                owner.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                route = owner.routes.get(path)
                if route is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                route(self)

            do_POST = do_PUT = do_DELETE = do_GET  # noqa: N815 (http.server's names)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = _Threaded(("127.0.0.1", 0), _Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="scripted-http", daemon=True
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> ScriptedServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@contextmanager
def scripted_server() -> Iterator[ScriptedServer]:
    """A started :class:`ScriptedServer`, stopped on exit."""
    server = ScriptedServer().start()
    try:
        yield server
    finally:
        server.stop()


def reply(
    handler: http.server.BaseHTTPRequestHandler,
    status: int,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> None:
    """Send a complete answer."""
    handler.send_response(status)
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)
