"""TLS verification (on by default, never silently off); proxies from Config or the environment."""

from __future__ import annotations

import base64
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from tinkex_actors import errors

from ._server import LocalServer
from .conftest import API_KEY, MakeTransport


@pytest.fixture
def tls_server(certificate: tuple[Path, Path]) -> Iterator[LocalServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*map(str, certificate))
    server = LocalServer(tls=context)
    yield server
    server.stop()


def test_untrusted_certificate_is_refused_by_default(
    tls_server: LocalServer, make_transport: MakeTransport
) -> None:
    transport = make_transport(tls_server.url, max_retries=0)
    with pytest.raises(errors.APIConnectionError) as info:
        transport.request("GET", "/api/v1/healthz")
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value)


def test_ca_bundle_makes_the_certificate_trusted(
    tls_server: LocalServer, make_transport: MakeTransport, certificate: tuple[Path, Path]
) -> None:
    transport = make_transport(tls_server.url, ca_bundle=str(certificate[0]))
    assert transport.request("GET", "/api/v1/healthz").status_code == 200
    assert tls_server.requests[0].headers["x-api-key"] == API_KEY


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_turning_verification_off_is_logged_once(
    tls_server: LocalServer, make_transport: MakeTransport
) -> None:
    key = f"tml-insecure-{uuid.uuid4().hex}"  # a tenant not warned about yet
    with structlog.testing.capture_logs() as logs:
        first = make_transport(tls_server.url, verify_tls=False, api_key=key)
        make_transport(tls_server.url, verify_tls=False, api_key=key)
        assert first.request("GET", "/api/v1/healthz").status_code == 200
    warnings = [e for e in logs if e["event"] == "tinkex.http.tls_verification_disabled"]
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == "warning"
    assert warnings[0]["tenant_id"] == first.config.tenant_id


def test_explicit_http_proxy_with_credentials(
    server: LocalServer, make_transport: MakeTransport
) -> None:
    proxy = server.url.replace("http://", "http://user:p%40ss@")
    transport = make_transport("http://tinker.invalid:8123/prefix", proxy=proxy)
    transport.request("POST", "/api/v1/x", body=b"{}")
    seen = server.requests[0]
    assert seen.target == "http://tinker.invalid:8123/prefix/api/v1/x"
    expected = "Basic " + base64.b64encode(b"user:p@ss").decode()
    assert seen.headers["proxy-authorization"] == expected
    assert seen.headers["x-api-key"] == API_KEY


_PROXY_VARIABLES = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY",
                    "all_proxy", "NO_PROXY", "no_proxy")  # fmt: skip


@pytest.fixture
def clean_proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in _PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_proxy_from_the_environment(
    server: LocalServer, make_transport: MakeTransport, clean_proxy_env: pytest.MonkeyPatch
) -> None:
    clean_proxy_env.setenv("HTTP_PROXY", server.url.replace("http://", "http://env:s3cret@"))
    transport = make_transport("http://tinker.invalid:8123/prefix")
    transport.request("POST", "/api/v1/x", body=b"{}")
    seen = server.requests[0]
    assert seen.target == "http://tinker.invalid:8123/prefix/api/v1/x"  # sent via the proxy
    assert (
        seen.headers["proxy-authorization"] == "Basic " + base64.b64encode(b"env:s3cret").decode()
    )


def test_no_proxy_excludes_a_host(
    server: LocalServer,
    other_server: LocalServer,
    make_transport: MakeTransport,
    clean_proxy_env: pytest.MonkeyPatch,
) -> None:
    clean_proxy_env.setenv("http_proxy", other_server.url)  # the proxy: must see nothing
    clean_proxy_env.setenv("NO_PROXY", "example.org,127.0.0.1")
    transport = make_transport(server.url)
    assert transport.request("GET", "/api/v1/healthz").status_code == 200
    assert server.requests[0].target == "/api/v1/healthz"  # direct
    assert other_server.requests == []


def test_the_environment_is_read_once_per_tenant(
    server: LocalServer,
    other_server: LocalServer,
    make_transport: MakeTransport,
    clean_proxy_env: pytest.MonkeyPatch,
) -> None:
    transport = make_transport(server.url)
    transport.request("GET", "/api/v1/healthz")
    clean_proxy_env.setenv("HTTP_PROXY", other_server.url)  # too late for this tenant
    transport.request("GET", "/api/v1/healthz")
    assert [r.target for r in server.requests] == ["/api/v1/healthz"] * 2
    assert other_server.requests == []


def test_an_explicit_proxy_wins_over_the_environment(
    server: LocalServer,
    other_server: LocalServer,
    make_transport: MakeTransport,
    clean_proxy_env: pytest.MonkeyPatch,
) -> None:
    clean_proxy_env.setenv("HTTP_PROXY", other_server.url)
    transport = make_transport("http://tinker.invalid:8123", proxy=server.url)
    transport.request("GET", "/api/v1/healthz")
    assert server.requests[0].target == "http://tinker.invalid:8123/api/v1/healthz"
    assert other_server.requests == []


def test_proxy_credentials_never_appear_in_errors(
    make_transport: MakeTransport, clean_proxy_env: pytest.MonkeyPatch
) -> None:
    clean_proxy_env.setenv("HTTP_PROXY", "http://user:hunter2-secret@127.0.0.1:9")
    transport = make_transport("http://tinker.invalid:8123", max_retries=0)
    with pytest.raises(errors.APIConnectionError) as info:
        transport.request("GET", "/api/v1/healthz")
    assert "hunter2-secret" not in str(info.value)
    assert "proxy" in str(info.value)
