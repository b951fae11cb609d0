"""TLS through the whole SDK: verification is on by default and never silently off.

The null server sits behind the fault proxy serving HTTPS with a self-signed certificate for
127.0.0.1. By default ``ServiceClient`` refuses it with a typed error, whatever the
environment says (variables that loosen other HTTP stacks are ignored: only ``Config`` decides);
``verify_tls=False`` works and logs a warning naming the tenant; ``ca_bundle`` makes the
certificate trusted for everything, the checkpoint download from the signed URL included.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
import structlog
from _servers import ServerHandle

from tinkex_actors import Config, ServiceClient, types
from tinkex_actors.errors import APIConnectionError

from ._training import ADAM, LORA, MODEL, WAIT, batch, checkpoint_files
from .conftest import MakeProxy

#: Variables that turn verification off, or point it elsewhere, in other HTTP stacks.
LOOSENING_ENV = {
    "CURL_CA_BUNDLE": "",
    "PYTHONHTTPSVERIFY": "0",
    "REQUESTS_CA_BUNDLE": "{cert}",
    "SSL_CERT_FILE": "{cert}",
    "SSL_CERT_DIR": "{dir}",
}


def _one_step(service: ServiceClient) -> str:
    training = service.create_lora_training_client(MODEL, LORA, timeout=WAIT)
    training.forward_backward(batch(0), "cross_entropy").result(WAIT)
    training.optim_step(ADAM).result(WAIT)
    sampler = training.save_weights_and_get_sampling_client(timeout=WAIT)
    prompt = types.ModelInput.from_ints([1, 2, 3])
    assert sampler.sample(prompt, types.SamplingParams(max_tokens=2)).result(WAIT).sequences
    return training.save_state("tls").result(WAIT).path


def test_an_untrusted_certificate_is_refused_by_default(
    null_server: ServerHandle,
    make_proxy: MakeProxy,
    server_tls: ssl.SSLContext,
    certificate: tuple[Path, Path],
    fast_sleep: Callable[[float], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cert = certificate[0]
    for name, value in LOOSENING_ENV.items():
        monkeypatch.setenv(name, value.format(cert=cert, dir=cert.parent))
    proxy = make_proxy(null_server.port, tls=server_tls)
    config = Config(api_key=null_server.api_key, base_url=proxy.url)
    assert config.verify_tls is True
    with pytest.raises(APIConnectionError) as refused:
        ServiceClient(config, sleep=fast_sleep)
    assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value)
    assert null_server.api_key not in str(refused.value)
    assert proxy.relayed == []  # nothing got through to the server


def test_verify_tls_false_works_and_is_logged(
    null_server: ServerHandle, make_proxy: MakeProxy, server_tls: ssl.SSLContext
) -> None:
    proxy = make_proxy(null_server.port, tls=server_tls)
    config = Config(api_key=null_server.api_key, base_url=proxy.url, verify_tls=False)
    with structlog.testing.capture_logs() as logs, ServiceClient(config) as service:
        _one_step(service)
    warned = [e for e in logs if e["event"] == "tinkex.http.tls_verification_disabled"]
    assert len(warned) == 1
    assert warned[0]["log_level"] == "warning"
    assert warned[0]["tenant_id"] == config.tenant_id
    assert proxy.relayed_to("/forward_backward")


def test_ca_bundle_trusts_the_certificate_for_everything(
    null_server: ServerHandle,
    make_proxy: MakeProxy,
    server_tls: ssl.SSLContext,
    certificate: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    proxy = make_proxy(null_server.port, tls=server_tls)
    config = Config(api_key=null_server.api_key, base_url=proxy.url, ca_bundle=str(certificate[0]))
    with structlog.testing.capture_logs() as logs, ServiceClient(config) as service:
        path = _one_step(service)
        rest = service.create_rest_client()
        try:
            url = rest.get_checkpoint_archive_url_by_tinker_path(path).url
            assert url.startswith("https://127.0.0.1:")  # the download is over TLS as well
            files = checkpoint_files(rest, path, tmp_path)
        finally:
            rest.close()
    assert "adapter_model.safetensors" in files
    assert not [e for e in logs if e["event"] == "tinkex.http.tls_verification_disabled"]
    assert proxy.relayed_to("/archive")  # relayed: the signed URL's GET went through TLS
