"""TLS verification (on by default, never silently off) and explicit proxies (no env lookups)."""

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


def test_proxy_environment_variables_are_ignored(
    server: LocalServer, make_transport: MakeTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "")
    transport = make_transport(server.url)
    assert transport.request("GET", "/api/v1/healthz").status_code == 200
    assert server.requests[0].target == "/api/v1/healthz"
