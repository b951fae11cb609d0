"""HTTPTransport against a real local HTTP server, on both backends."""

from __future__ import annotations

import email.utils
import socket
import threading
import time

import orjson
import pytest
import structlog

from tinkex_actors import _constants as c
from tinkex_actors import errors
from tinkex_actors._version import __version__
from tinkex_actors.testing import SleepRecorder
from tinkex_actors.transport import path_segment

from ._server import Answer, LocalServer
from .conftest import API_KEY, MakeTransport


def test_protocol_headers_on_a_post(server: LocalServer, make_transport: MakeTransport) -> None:
    transport = make_transport(
        server.url + "/services/tinker-prod/",
        cf_access_client_id="cf-id",
        cf_access_client_secret="cf-secret",
        default_headers={"X-Team": "research"},
    )
    reply = transport.request(
        "POST", "/api/v1/create_session", body=b'{"a":1}', query={"x": 1, "flag": True}
    )
    assert reply.status_code == 200
    assert reply.retries_taken == 0
    assert reply.elapsed > 0
    assert reply.content_type == "application/json"
    seen = server.requests[0]
    assert seen.method == "POST"
    assert seen.target == "/services/tinker-prod/api/v1/create_session?x=1&flag=true"
    assert seen.body == b'{"a":1}'
    h = seen.headers
    assert h["x-api-key"] == API_KEY
    assert h["content-type"] == "application/json"
    assert h["accept"] == "application/json"
    assert h["user-agent"] == f"tinkex_actors/{__version__}"
    assert h["x-stainless-retry-count"] == "0"
    assert h["x-stainless-read-timeout"] == "60"
    assert h["x-idempotency-key"].startswith(c.IDEMPOTENCY_KEY_PREFIX)
    assert h["cf-access-client-id"] == "cf-id"
    assert h["cf-access-client-secret"] == "cf-secret"
    assert h["x-team"] == "research"
    assert "x-tinker-request-type" not in h
    assert "x-tinker-request-iteration" not in h
    assert reply.json()["body_length"] == 7


def test_get_has_no_idempotency_key_or_content_type(
    server: LocalServer, make_transport: MakeTransport
) -> None:
    make_transport(server.url).request("GET", "/api/v1/healthz")
    h = server.requests[0].headers
    assert "x-idempotency-key" not in h
    assert "content-type" not in h
    assert h["x-api-key"] == API_KEY


def test_retrieve_future_headers_and_per_call_timeout(
    server: LocalServer, make_transport: MakeTransport
) -> None:
    transport = make_transport(server.url)
    transport.request(
        "POST",
        "/api/v1/retrieve_future",
        body=b'{"request_id":"1"}',
        accept=c.CONTENT_PROTOBUF,
        request_type="ForwardBackward",
        iteration=3,
        timeout=45,
        headers={c.HEADER_PROMISE_ROUNDTRIP: "0.25"},
    )
    h = server.requests[0].headers
    assert h["x-tinker-request-type"] == "ForwardBackward"
    assert h["x-tinker-request-iteration"] == "3"
    assert h["x-stainless-read-timeout"] == "45"
    assert h["accept"] == c.CONTENT_PROTOBUF
    assert h["x-tinker-create-promise-roundtrip-time"] == "0.25"


def test_idempotency_key_is_reused_across_retries_only(
    server: LocalServer, make_transport: MakeTransport
) -> None:
    sleeps = SleepRecorder()
    transport = make_transport(server.url, sleep=sleeps, uniform=lambda: 0.0)
    server.script(Answer(500), Answer(503))
    reply = transport.request("POST", "/api/v1/forward_backward", body=b"{}")
    assert reply.retries_taken == 2
    assert sleeps.delays == [0.5, 1.0]
    first_call = server.requests[:3]
    keys = {s.headers["x-idempotency-key"] for s in first_call}
    assert len(keys) == 1
    assert [s.headers["x-stainless-retry-count"] for s in first_call] == ["0", "1", "2"]
    transport.request("POST", "/api/v1/forward_backward", body=b"{}")
    assert server.requests[3].headers["x-idempotency-key"] not in keys
    transport.request("POST", "/api/v1/x", body=b"{}", idempotency_key="my-own-key")
    assert server.requests[4].headers["x-idempotency-key"] == "my-own-key"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after": "2"}, 2.0),
        ({"retry-after": "120"}, 0.5),  # beyond 60 s: ignored, back-off instead
        ({"retry-after": "0"}, 0.5),
        ({"retry-after": "soon"}, 0.5),
    ],
)
def test_retry_after_is_honoured_within_bounds(
    server: LocalServer,
    make_transport: MakeTransport,
    headers: dict[str, str],
    expected: float,
) -> None:
    sleeps = SleepRecorder()
    transport = make_transport(server.url, sleep=sleeps, uniform=lambda: 0.0)
    server.script(Answer(429, b"slow down", headers))
    assert transport.request("POST", "/api/v1/asample", body=b"{}").status_code == 200
    assert sleeps.delays == [expected]


def test_retry_after_http_date(server: LocalServer, make_transport: MakeTransport) -> None:
    sleeps = SleepRecorder()
    transport = make_transport(server.url, sleep=sleeps, uniform=lambda: 0.0)
    when = email.utils.formatdate(time.time() + 5, usegmt=True)
    server.script(Answer(503, b"", {"Retry-After": when}))
    transport.request("GET", "/api/v1/x")
    assert len(sleeps.delays) == 1
    assert 3.0 < sleeps.delays[0] <= 5.0


def test_x_should_retry_overrides_the_status(
    server: LocalServer, make_transport: MakeTransport
) -> None:
    sleeps = SleepRecorder()
    transport = make_transport(server.url, sleep=sleeps, uniform=lambda: 0.0)
    server.script(Answer(503, b"no", {"x-should-retry": "false"}))
    with pytest.raises(errors.InternalServerError):
        transport.request("POST", "/api/v1/x", body=b"{}")
    assert len(server.requests) == 1
    server.script(Answer(400, b"again", {"x-should-retry": "true"}))
    assert transport.request("POST", "/api/v1/x", body=b"{}").retries_taken == 1


def test_read_timeout_raises_api_timeout_error(
    server: LocalServer, make_transport: MakeTransport
) -> None:
    sleeps = SleepRecorder()
    transport = make_transport(server.url, sleep=sleeps)
    server.script(Answer(delay=5.0), Answer(delay=5.0))
    with pytest.raises(errors.APITimeoutError) as info:
        transport.request("POST", "/api/v1/x", body=b"{}", timeout=0.2, max_retries=1)
    assert isinstance(info.value, TimeoutError)
    assert isinstance(info.value, errors.APIConnectionError)
    assert info.value.method == "POST"
    assert info.value.path == "/api/v1/x"
    assert len(sleeps.delays) == 1
    assert len(server.requests) == 2


def test_connection_refused_is_retried_then_raised(make_transport: MakeTransport) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sleeps = SleepRecorder()
    transport = make_transport(f"http://127.0.0.1:{port}", sleep=sleeps, max_retries=3)
    with pytest.raises(errors.APIConnectionError) as info:
        transport.request("GET", "/api/v1/healthz")
    assert not isinstance(info.value, errors.APITimeoutError)
    assert len(sleeps.delays) == 3
    assert f"127.0.0.1:{port}" in str(info.value)


def test_connection_reset_is_retried(server: LocalServer, make_transport: MakeTransport) -> None:
    sleeps = SleepRecorder()
    transport = make_transport(server.url, sleep=sleeps)
    server.script(Answer(reset=True))
    reply = transport.request("POST", "/api/v1/x", body=b"{}")
    assert reply.retries_taken == 1
    server.script(Answer(reset=True))
    with pytest.raises(errors.APIConnectionError):
        transport.request("POST", "/api/v1/x", body=b"{}", max_retries=0)


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, errors.BadRequestError),
        (401, errors.AuthenticationError),
        (402, errors.BillingError),
        (403, errors.PermissionDeniedError),
        (404, errors.NotFoundError),
        (409, errors.ConflictError),
        (410, errors.GoneError),
        (413, errors.PayloadTooLargeError),
        (418, errors.APIStatusError),
        (422, errors.UnprocessableEntityError),
        (429, errors.RateLimitError),
        (500, errors.InternalServerError),
        (503, errors.InternalServerError),
    ],
)
def test_status_errors_map_by_code_with_a_bounded_excerpt(
    server: LocalServer, make_transport: MakeTransport, status: int, cls: type[Exception]
) -> None:
    transport = make_transport(server.url)
    body = b'{"detail": "' + b"x" * 3000 + b'"}'
    server.script(Answer(status, body, {"X-Request-Id": "abc"}))
    with pytest.raises(errors.APIStatusError) as info:
        transport.request("POST", "/api/v1/forward", body=b"{}", max_retries=0)
    exc = info.value
    assert type(exc) is cls
    assert exc.status_code == status
    assert exc.body.startswith('{"detail": "xxx')
    assert len(exc.body) < errors.BODY_EXCERPT_LIMIT + 50
    assert exc.headers["x-request-id"] == "abc"
    assert exc.method == "POST"
    assert exc.path == "/api/v1/forward"
    assert f"POST /api/v1/forward -> HTTP {status}" in str(exc)
    assert len(str(exc)) < 700


def test_chunked_and_keep_alive(server: LocalServer, make_transport: MakeTransport) -> None:
    transport = make_transport(server.url)
    payload = bytes(range(256)) * 10
    server.script(Answer(200, payload, chunked=True))
    assert transport.request("GET", "/api/v1/blob").content == payload
    for _ in range(20):
        transport.request("POST", "/api/v1/x", body=b"{}")
    # One pooled keep-alive connection served all 21 sequential requests.
    assert len({s.client_port for s in server.requests}) == 1


def test_threads_share_one_pool(server: LocalServer, make_transport: MakeTransport) -> None:
    transport = make_transport(server.url)
    failures: list[BaseException] = []

    def work() -> None:
        try:
            for i in range(25):
                body = orjson.dumps({"i": i})
                reply = transport.request("POST", "/api/v1/x", body=body)
                assert reply.json()["body_length"] == len(body)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not failures
    assert len(server.requests) == 200
    assert len({s.client_port for s in server.requests}) <= 8


def test_same_origin_redirect_is_followed_with_the_key(
    server: LocalServer, make_transport: MakeTransport
) -> None:
    transport = make_transport(server.url)
    server.script(Answer(307, b"", {"Location": "/api/v1/moved"}))
    reply = transport.request("POST", "/api/v1/x", body=b"{}")
    assert reply.json()["target"] == "/api/v1/moved"
    assert server.requests[1].headers["x-api-key"] == API_KEY
    assert server.requests[1].body == b"{}"


def test_cross_origin_redirect_is_not_followed(
    server: LocalServer, other_server: LocalServer, make_transport: MakeTransport
) -> None:
    transport = make_transport(server.url)
    server.script(Answer(302, b"", {"Location": other_server.url + "/steal"}))
    with pytest.raises(errors.APIStatusError) as info:
        transport.request("GET", "/api/v1/x")
    assert info.value.status_code == 302
    assert "another origin" in str(info.value)
    assert other_server.requests == []
    server.script(Answer(302, b"", {"Location": other_server.url + "/file"}))
    reply = transport.request("GET", "/api/v1/x", follow_redirects=False)
    assert reply.status_code == 302
    assert reply.header("Location") == other_server.url + "/file"


def test_closed_transport_refuses_calls(server: LocalServer, make_transport: MakeTransport) -> None:
    transport = make_transport(server.url)
    transport.close()
    transport.close()  # idempotent
    assert transport.closed
    with pytest.raises(errors.ClientClosedError):
        transport.request("GET", "/api/v1/x")
    assert server.requests == []


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"method": "FETCH"}, "method"),
        ({"path": "api/v1/x"}, "path"),
        ({"path": "/api/v1/x?y=1"}, "path"),
        ({"path": "//evil.example/x"}, "path"),
        ({"body": "text"}, "body"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": True}, "timeout"),
        ({"max_retries": -1}, "max_retries"),
        ({"headers": {"X-Bad": "a\r\nInjected: 1"}}, "headers"),
        ({"headers": {"X-API-Key": "tml-other"}}, "headers"),
        ({"headers": {"bad name": "v"}}, "headers"),
        ({"idempotency_key": "has space"}, "idempotency_key"),
        ({"idempotency_key": ""}, "idempotency_key"),
        ({"request_type": "Two Words"}, "request_type"),
        ({"iteration": -1}, "iteration"),
        ({"query": {"k": object()}}, "query"),
        ({"accept": "a\nb"}, "accept"),
    ],
)
def test_bad_input_is_rejected_before_sending(
    server: LocalServer, make_transport: MakeTransport, kwargs: dict[str, object], field: str
) -> None:
    transport = make_transport(server.url)
    call: dict[str, object] = {"method": "POST", "path": "/api/v1/x", "body": b"{}"}
    call.update(kwargs)
    method, path = call.pop("method"), call.pop("path")
    with pytest.raises(errors.ValidationError) as info:
        transport.request(method, path, **call)  # type: ignore[arg-type]
    assert info.value.field == field
    assert server.requests == []


def test_deprecation_notes_are_logged_once(
    server: LocalServer, make_transport: MakeTransport
) -> None:
    note = f"endpoint retired soon {time.time_ns()}"
    headers = {"X-Deprecation-Note": note, "X-Deprecation-Level": "error"}
    server.script(Answer(200, b"{}", headers), Answer(200, b"{}", headers))
    transport = make_transport(server.url)
    with structlog.testing.capture_logs() as logs:
        transport.request("GET", "/api/v1/old")
        transport.request("GET", "/api/v1/old")
    reported = [e for e in logs if e["event"] == "tinkex.http.deprecation"]
    assert reported == [
        {
            "event": "tinkex.http.deprecation",
            "note": note,
            "path": "/api/v1/old",
            "log_level": "error",
        }
    ]


def test_non_ascii_paths_are_percent_encoded(
    server: LocalServer, make_transport: MakeTransport
) -> None:
    transport = make_transport(server.url)
    transport.request("GET", "/api/v1/training_runs/r\u00e9sum\u00e9/checkpoints/\u6a21\u578b")
    assert server.requests[0].target == (
        "/api/v1/training_runs/r%C3%A9sum%C3%A9/checkpoints/%E6%A8%A1%E5%9E%8B"
    )
    transport.request("GET", "/api/v1/already%20encoded")
    assert server.requests[1].target == "/api/v1/already%20encoded"  # escapes kept


@pytest.mark.parametrize(
    ("raw", "quoted"),
    [
        ("sess:sample:0", "sess:sample:0"),  # official ids keep their colons
        ("a/../b", "a%2F..%2Fb"),
        ("x?admin=1#frag", "x%3Fadmin=1%23frag"),
        ("50% off", "50%25%20off"),
        ("caf\u00e9", "caf%C3%A9"),
    ],
)
def test_server_supplied_ids_are_quoted_as_one_segment(raw: str, quoted: str) -> None:
    assert path_segment(raw) == quoted


def test_a_sampler_id_with_slashes_stays_one_segment(
    server: LocalServer, make_transport: MakeTransport
) -> None:
    transport = make_transport(server.url)
    transport.request("GET", "/api/v1/samplers/" + path_segment("evil/../../admin"))
    assert server.requests[0].target == "/api/v1/samplers/evil%2F..%2F..%2Fadmin"
