"""A fault-injecting HTTP/1.1 reverse proxy on 127.0.0.1, for the reliability tests.

The SDK's ``base_url`` points at the proxy; the proxy relays each request to the upstream
server (the embedded server) on a fresh upstream connection and the answer back on the
client's keep-alive connection, unless its *policy* picks a fault for that exchange:

==================  ===========================================================================
fault               what the client sees (and whether the server saw the request)
==================  ===========================================================================
``DROP_REQUEST``    the connection is reset (or, ``reset=False``, closed) instead of relaying
                    the request (server: no)
``DROP_RESPONSE``   the request is relayed, then only part of the answer arrives (server: yes)
``STATUS``          ``status`` (500/502/503/429, optional ``retry-after``) (server: no)
``STATUS_AFTER``    the request is relayed, its answer replaced by ``status`` (server: yes)
``DELAY``           the request is held ``delay`` seconds, then relayed
``TRY_AGAIN``       ``retrieve_future`` only: ``try_again`` (each after ``delay``, an expiring
                    long poll) for ``stretch`` polls in a row of that future (server: not asked)
==================  ===========================================================================

Faults reproduce: a policy decides from the exchange's *identity* (path, the ordinal of the
logical request on that path, the attempt number), never from arrival timing. The ordinal of
a submission is the order in which its idempotency key first appeared; a ``retrieve_future``
poll's ordinal is the order in which the server announced its ``request_id``, and its attempt
is ``X-Tinker-Request-Iteration``. The proxy runs its own event loop in one thread, started
and stopped by the test fixtures; every fault and every relayed exchange is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import orjson

from ._faults import RETRIEVE, Exchange, Fault, FaultKind, NoFaults, Policy
from ._http import HTTPFramingError, Message, read_request, read_response, render_response

__all__ = ["FaultProxy", "FaultRecord", "Relayed"]
_UPSTREAM_TIMEOUT = 120.0
_STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class FaultRecord:
    """One injected fault."""

    identity: str
    path: str
    fault: Fault


@dataclass(frozen=True)
class Relayed:
    """One exchange relayed to the upstream (the server saw it).

    Attributes:
        request: the request as the client sent it (body decoded).
        response: the upstream's answer, or None when the upstream could not be reached.
        faulted: the label of a fault applied to the answer (drop_response, status_after).
    """

    request: Message
    response: Message | None
    faulted: str | None = None

    @property
    def path(self) -> str:
        return self.request.path

    def answer_json(self) -> object:
        """The upstream's answer parsed as JSON (None when it is not JSON)."""
        if self.response is None:
            return None
        try:
            return orjson.loads(self.response.decoded)
        except orjson.JSONDecodeError:
            return None


@dataclass(frozen=True)
class _Item:
    request: Message
    exchange: Exchange
    fault: Fault | None
    continued: bool


@dataclass
class _Ordinals:
    by_key: dict[tuple[str, str], int] = field(default_factory=dict)
    per_path: Counter[str] = field(default_factory=Counter)
    futures: dict[str, int] = field(default_factory=dict)

    def submission(self, path: str, key: str | None) -> int:
        if key is None:
            ordinal = self.per_path[path]
            self.per_path[path] += 1
            return ordinal
        slot = (path, key)
        if slot not in self.by_key:
            self.by_key[slot] = self.per_path[path]
            self.per_path[path] += 1
        return self.by_key[slot]

    def future(self, request_id: str) -> int:
        if request_id not in self.futures:
            self.futures[request_id] = len(self.futures)
        return self.futures[request_id]


def _request_id(body: bytes) -> str | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    value = data.get("request_id") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


class FaultProxy:
    """The proxy; use as a context manager or call :meth:`start` / :meth:`stop`.

    Args:
        upstream_port: the server's port on 127.0.0.1.
        policy: the fault policy (mutable: tests swap it mid-run).
        tls: serve HTTPS with this context instead of plain HTTP.
    """

    def __init__(
        self, upstream_port: int, policy: Policy | None = None, *, tls: ssl.SSLContext | None = None
    ) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.policy: Policy = policy or NoFaults()
        self.tls = tls
        self.port = 0
        self.faults: list[FaultRecord] = []
        self.relayed: list[Relayed] = []
        self.seen: Counter[str] = Counter()
        self.upstream_failures = 0
        #: try_again answers given (a stretch counts once in ``faults``, each answer here).
        self.try_again_answers = 0
        self._ordinals = _Ordinals()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stretches: dict[str, tuple[int, Fault]] = {}
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy")

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        """The proxy's base URL."""
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        """Listen on a free port; returns self."""
        self._thread.start()
        started = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        self.port = started.result(_STOP_TIMEOUT)
        return self

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(
            self._client, "127.0.0.1", 0, ssl=self.tls, limit=256 * 1024
        )
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def stop(self) -> None:
        """Close every connection, stop the loop and join its thread."""
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(_STOP_TIMEOUT)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(_STOP_TIMEOUT)
        self._loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=_STOP_TIMEOUT)
        if self._server is not None:
            await self._server.wait_closed()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ observations
    def fault_counts(self) -> Counter[str]:
        """Injected faults by label."""
        with self._lock:
            return Counter(record.fault.label for record in self.faults)

    def fault_kinds(self) -> Counter[str]:
        """Injected faults by kind."""
        with self._lock:
            return Counter(record.fault.kind.value for record in self.faults)

    def faults_on(self, path_suffix: str) -> list[FaultRecord]:
        """The faults injected on paths ending with ``path_suffix``."""
        with self._lock:
            return [r for r in self.faults if r.path.endswith(path_suffix)]

    def relayed_to(self, path_suffix: str) -> list[Relayed]:
        """The exchanges the upstream saw on paths ending with ``path_suffix``, in order."""
        with self._lock:
            return [r for r in self.relayed if r.path.endswith(path_suffix)]

    def requests(self) -> Iterator[Message]:
        """Every request that reached the proxy and was relayed."""
        with self._lock:
            items = list(self.relayed)
        return (r.request for r in items)

    # ------------------------------------------------------------------ serving
    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                item = await self._next_request(reader, writer)
                if item is None:
                    return
                if not await self._serve(item, writer):
                    return
        except (
            ConnectionError,
            HTTPFramingError,
            asyncio.IncompleteReadError,
            ssl.SSLError,
            ValueError,
        ):
            return
        except asyncio.CancelledError:
            raise
        finally:
            self._tasks.discard(task)
            writer.transport.abort()

    async def _next_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> _Item | None:
        request = await read_request(reader)
        if request is None:
            return None
        exchange = self._exchange(request)
        fault, continued = self._decide(exchange)
        if fault is not None and fault.kind is FaultKind.DROP_REQUEST:
            # A reset (RST, not a clean close) without an answer is what the client sees when
            # its request dies on the way: it cannot tell whether the server saw it (it did
            # not). A clean close before the answer would read as a keep-alive race, which
            # clients rightly replay at once.
            self._record(exchange, fault)
            sock = writer.get_extra_info("socket")
            if sock is not None and fault.reset:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return None
        return _Item(request, exchange, fault, continued)

    def _exchange(self, request: Message) -> Exchange:
        headers = {k.lower(): v for k, v in request.headers}
        path = request.path
        with self._lock:
            self.seen[path] += 1
            if path == RETRIEVE:
                request_id = _request_id(request.decoded)
                ordinal = self._ordinals.future(request_id or "")
                attempt = _int(headers.get("x-tinker-request-iteration"))
            else:
                request_id = None
                ordinal = self._ordinals.submission(path, headers.get("x-idempotency-key"))
                attempt = _int(headers.get("x-stainless-retry-count"))
        return Exchange(
            request.method, path, headers, request.decoded, ordinal, attempt, request_id
        )

    def _decide(self, exchange: Exchange) -> tuple[Fault | None, bool]:
        """The exchange's fault, and whether it continues a try_again stretch."""
        rid = exchange.request_id
        if rid is not None and rid in self._stretches:
            left, fault = self._stretches[rid]
            if left > 0:
                self._stretches[rid] = (left - 1, fault)
                return fault, True
            del self._stretches[rid]
        decided = self.policy.decide(exchange)
        if decided is not None and decided.kind is FaultKind.TRY_AGAIN and rid is not None:
            self._stretches[rid] = (decided.stretch - 1, decided)
        return decided, False

    def _record(self, exchange: Exchange, fault: Fault, continued: bool = False) -> None:
        with self._lock:
            if continued:
                self.try_again_answers += 1
            else:
                self.faults.append(FaultRecord(exchange.identity, exchange.path, fault))
                if fault.kind is FaultKind.TRY_AGAIN:
                    self.try_again_answers += 1

    async def _serve(self, item: _Item, writer: asyncio.StreamWriter) -> bool:
        request, exchange, fault = item.request, item.exchange, item.fault
        keep = request.keep_alive
        if fault is not None:
            self._record(exchange, fault, item.continued)
            if fault.kind is FaultKind.STATUS:
                writer.write(_status_answer(fault))
                await writer.drain()
                return keep
            if fault.kind is FaultKind.TRY_AGAIN:
                await asyncio.sleep(fault.delay)  # the hold of a long poll that expires
                body = orjson.dumps(
                    {
                        "type": "try_again",
                        "request_id": exchange.request_id,
                        "queue_state": fault.queue_state,
                        "queue_state_reason": "injected by the fault proxy",
                    }
                )
                writer.write(render_response(200, body))
                await writer.drain()
                return keep
            if fault.kind is FaultKind.DELAY:
                await asyncio.sleep(fault.delay)
        response = await self._relay(request)
        if response is None:
            with self._lock:
                self.relayed.append(Relayed(request, None))
                self.upstream_failures += 1
            writer.write(render_response(502, b'{"detail": "upstream unreachable"}'))
            await writer.drain()
            return keep
        label = fault.label if fault and fault.kind in _AFTER_RELAY else None
        with self._lock:
            self.relayed.append(Relayed(request, response, label))
            self._note_futures(response)
        if fault is not None and fault.kind is FaultKind.STATUS_AFTER:
            writer.write(_status_answer(fault))
            await writer.drain()
            return keep
        wire = response.head_bytes(response.without("connection")) + response.body
        if fault is not None and fault.kind is FaultKind.DROP_RESPONSE:
            head = len(wire) - len(response.body)
            cut = head + len(response.body) // 2 if len(response.body) > 1 else head // 2
            writer.write(wire[:cut])
            await writer.drain()
            return False
        writer.write(wire)
        await writer.drain()
        return keep

    def _note_futures(self, response: Message) -> None:
        # Futures get their ordinal in the order the server announced them (submissions are
        # serialized per model), not in the order their first polls happen to arrive.
        if b"request_id" in response.decoded[:4096]:
            request_id = _request_id(response.decoded)
            if request_id is not None:
                self._ordinals.future(request_id)

    async def _relay(self, request: Message) -> Message | None:
        host, port = self.upstream
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, limit=256 * 1024), _UPSTREAM_TIMEOUT
            )
        except (OSError, TimeoutError):
            return None
        try:
            headers = [*request.without("connection", "x-forwarded-proto"), ("Connection", "close")]
            if self.tls is not None:
                # What a TLS-terminating proxy tells the server, so the URLs it builds (signed
                # archive URLs) say https.
                headers.append(("X-Forwarded-Proto", "https"))
            writer.write(request.head_bytes(headers) + request.body)
            await writer.drain()
            return await asyncio.wait_for(read_response(reader, request.method), _UPSTREAM_TIMEOUT)
        except (OSError, TimeoutError, HTTPFramingError, asyncio.IncompleteReadError):
            return None
        finally:
            writer.transport.abort()


_AFTER_RELAY = (FaultKind.DROP_RESPONSE, FaultKind.STATUS_AFTER)


def _status_answer(fault: Fault) -> bytes:
    headers: list[tuple[str, str]] = []
    if fault.retry_after is not None:
        headers.append(("retry-after", fault.retry_after))
    if fault.retry_after_ms is not None:
        headers.append(("retry-after-ms", fault.retry_after_ms))
    body = orjson.dumps({"detail": f"injected {fault.status} ({fault.kind.value})"})
    return render_response(fault.status, body, headers)
