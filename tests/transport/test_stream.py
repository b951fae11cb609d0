"""Streaming downloads: chunks, content length, and the API key only for the base origin."""

from __future__ import annotations

import pytest

from tinkex_actors import errors
from tinkex_actors.testing import SleepRecorder

from ._server import Answer, LocalServer, Seen
from .conftest import API_KEY, MakeTransport

BLOB = bytes(range(256)) * 64  # 16 KiB


def blob(_: Seen) -> Answer:
    return Answer(200, BLOB, {"Content-Type": "application/gzip"})


def test_stream_from_the_base_origin_sends_the_key(
    server: LocalServer, make_transport: MakeTransport
) -> None:
    server.route = blob
    transport = make_transport(
        server.url, cf_access_client_id="cf-id", cf_access_client_secret="cf-secret"
    )
    with transport.stream("/api/v1/archive", chunk_size=1000) as download:
        assert download.status_code == 200
        assert download.content_length == len(BLOB)
        chunks = list(download)
    assert b"".join(chunks) == BLOB
    assert max(len(chunk) for chunk in chunks) <= 1000
    seen = server.requests[0].headers
    assert seen["x-api-key"] == API_KEY
    assert seen["cf-access-client-secret"] == "cf-secret"


def test_stream_to_another_origin_sends_no_credentials(
    server: LocalServer, other_server: LocalServer, make_transport: MakeTransport
) -> None:
    other_server.route = blob
    transport = make_transport(
        server.url,
        cf_access_client_id="cf-id",
        cf_access_client_secret="cf-secret",
        default_headers={"X-Team": "research"},
    )
    signed = other_server.url + "/bucket/ckpt.tar?X-Signature=abc123&Expires=99"
    with transport.stream(signed) as download:
        assert download.read() == BLOB
    seen = other_server.requests[0]
    assert seen.target == "/bucket/ckpt.tar?X-Signature=abc123&Expires=99"
    for header in ("x-api-key", "cf-access-client-id", "cf-access-client-secret", "x-team"):
        assert header not in seen.headers
    assert seen.headers["user-agent"].startswith("tinkex_actors/")
    assert server.requests == []


def test_redirect_to_a_signed_url_drops_the_key_at_the_hop(
    server: LocalServer, other_server: LocalServer, make_transport: MakeTransport
) -> None:
    other_server.route = blob
    server.script(Answer(302, b"", {"Location": other_server.url + "/signed?sig=1"}))
    transport = make_transport(server.url)
    with transport.stream("/api/v1/checkpoints/archive") as download:
        assert download.read() == BLOB
        assert download.url == other_server.url + "/signed?sig=1"
    assert server.requests[0].headers["x-api-key"] == API_KEY
    assert "x-api-key" not in other_server.requests[0].headers


def test_stream_errors_and_retries(server: LocalServer, make_transport: MakeTransport) -> None:
    sleeps = SleepRecorder()
    transport = make_transport(server.url, sleep=sleeps, uniform=lambda: 0.0)
    server.script(Answer(404, b'{"detail": "no such checkpoint"}'))
    with pytest.raises(errors.NotFoundError) as info, transport.stream("/api/v1/missing"):
        pass
    assert "no such checkpoint" in info.value.body
    server.script(Answer(503), then=blob)
    with transport.stream("/api/v1/archive") as download:
        assert download.read() == BLOB
    assert sleeps.delays == [0.5]


def test_abandoned_stream_leaves_the_pool_usable(
    server: LocalServer, make_transport: MakeTransport
) -> None:
    server.route = blob
    transport = make_transport(server.url)
    with transport.stream("/api/v1/archive", chunk_size=100) as download:
        next(iter(download))
    # The half-read connection was dropped, not handed to the next request.
    assert transport.request("GET", "/api/v1/archive").content == BLOB


@pytest.mark.parametrize("url", ["ftp://example.com/x", "example.com/x", "http:///nohost"])
def test_stream_rejects_bad_urls(
    server: LocalServer, make_transport: MakeTransport, url: str
) -> None:
    transport = make_transport(server.url)
    with pytest.raises(errors.ValidationError) as info, transport.stream(url):
        pass
    assert info.value.field == "url"


def test_redirect_to_a_non_http_url_is_an_error(
    server: LocalServer, make_transport: MakeTransport
) -> None:
    server.script(Answer(302, b"", {"Location": "file:///etc/passwd"}))
    transport = make_transport(server.url)
    with pytest.raises(errors.APIStatusError) as info, transport.stream("/api/v1/archive"):
        pass
    assert info.value.status_code == 302
    assert len(server.requests) == 1
