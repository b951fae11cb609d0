"""save_weights_external and external_weights_urls (protocol §3.5, §3.8) on the null server.

Plain HTTP for the contract (result, listing, signed per-file URLs, TTL, delete, errors, age
encryption) and the official 0.38 SDK for the calls its download flows make. The torch-engine
download that loads back is in ``test_external_download.py``.
"""

from __future__ import annotations

import time
from typing import Any

import pyrage
import pytest
import requests
import tinker
from _servers import ServerHandle
from tinker import types

from ._helpers import MODEL, Api, datum_json
from ._sdk import ce_datum, rest_client, service_client

EXPORT_FILES = ["adapter_config.json", "adapter_model.safetensors"]


def _export(api: Api, model: str, seq: int, name: str, **extra: Any) -> dict[str, Any]:
    future = api.ok(
        "/save_weights_external", {"model_id": model, "seq_id": seq, "path": name, **extra}
    )
    return api.result(future)


def _checkpoints(api: Api, model: str) -> dict[str, dict[str, Any]]:
    listed = api.get(f"/training_runs/{model}/checkpoints").json()["checkpoints"]
    return {c["checkpoint_id"]: c for c in listed}


def _urls(api: Api, model: str, checkpoint_id: str) -> requests.Response:
    return api.get(f"/training_runs/{model}/checkpoints/{checkpoint_id}/external_weights_urls")


def test_export_is_listed_signed_served_and_managed(api: Api, null_server: ServerHandle) -> None:
    model = api.create_model(api.session())
    api.fwdbwd(model, 1, [datum_json([1, 2, 3], [2, 3, 4])])
    result = _export(api, model, 2, "exp", ttl_seconds=7200)
    assert result["path"] == f"tinker://{model}/external_weights/exp"
    assert result["type"] == "save_weights_external"

    listed = _checkpoints(api, model)["external_weights/exp"]
    assert listed["checkpoint_type"] == "external"
    assert listed["tinker_path"] == result["path"]
    assert listed["size_bytes"] == result["size_bytes"] > 0
    assert listed["expires_at"] is not None

    signed = _urls(api, model, "external_weights/exp")
    assert signed.status_code == 200, signed.text
    urls = signed.json()["urls"]
    assert sorted(urls) == EXPORT_FILES
    assert signed.json()["expires"].endswith("Z")
    total = 0
    for url in urls.values():
        download = requests.get(url, timeout=30)  # no API key: the signature is the permission
        assert download.status_code == 200
        assert int(download.headers["content-length"]) == len(download.content)
        total += len(download.content)
    assert total == result["size_bytes"]

    # A signature is valid for its own file only, and not when altered.
    config_url, weights_url = urls["adapter_config.json"], urls["adapter_model.safetensors"]
    swapped = weights_url.split("?")[0] + "?" + config_url.split("?")[1]
    assert requests.get(swapped, timeout=30).status_code == 403
    assert requests.get(config_url[:-4] + "0000", timeout=30).status_code == 403
    assert requests.get(config_url.split("?")[0], timeout=30).status_code == 403

    # TTL reset (what the download flows do after signing) and delete.
    base = f"/training_runs/{model}/checkpoints/external_weights/exp"
    assert api.request("PUT", f"{base}/ttl", json={"ttl_seconds": 3600}).status_code == 204
    new_expiry = _checkpoints(api, model)["external_weights/exp"]["expires_at"]
    assert new_expiry < listed["expires_at"]
    assert api.request("DELETE", base).status_code == 204
    assert _urls(api, model, "external_weights/exp").status_code == 404
    assert requests.get(config_url, timeout=30).status_code == 404
    assert "external_weights/exp" not in _checkpoints(api, model)


def test_export_errors_are_clear(api: Api) -> None:
    session = api.session()
    model = api.create_model(session)
    path = api.save(model, 1, "state")
    _export(api, model, 2, "exp")

    clash = api.post("/save_weights_external", {"model_id": model, "seq_id": 3, "path": "exp"})
    assert clash.status_code == 409
    assert clash.headers["x-should-retry"] == "false"
    missing = api.post("/save_weights_external", {"model_id": model, "seq_id": 4})
    assert missing.status_code == 400
    assert "path" in missing.json()["detail"]
    too_many = api.post(
        "/save_weights_external",
        {"model_id": model, "seq_id": 5, "path": "x", "age_encryption_recipients": ["a"] * 11},
    )
    assert too_many.status_code == 400
    assert "at most 10" in too_many.json()["detail"]
    garbled = api.post(
        "/save_weights_external",
        {"model_id": model, "seq_id": 6, "path": "x", "age_encryption_recipients": ["age1nope"]},
    )
    assert garbled.status_code == 400
    assert "age_encryption_recipients[0]" in garbled.json()["detail"]

    # Per-file URLs exist only for exports; exports are for download only.
    not_external = _urls(api, model, "weights/state")
    assert not_external.status_code == 400
    assert "external" in not_external.json()["detail"]
    assert _urls(api, model, "external_weights/never").status_code == 404
    export_path = f"tinker://{model}/external_weights/exp"
    load = api.post("/load_weights", {"model_id": model, "seq_id": 7, "path": export_path})
    assert load.status_code == 400
    assert "download only" in load.json()["detail"]
    sampler = api.post(
        "/create_sampling_session",
        {"session_id": session, "sampling_session_seq_id": 0, "model_path": export_path},
    )
    assert sampler.status_code == 400
    assert "download only" in sampler.json()["detail"]
    info = api.post("/weights_info", {"tinker_path": export_path})
    assert info.status_code == 200
    assert info.json()["base_model"] == MODEL
    # The rejected requests used their seq_ids: the next one runs at once.
    loaded = api.result(api.ok("/load_weights", {"model_id": model, "seq_id": 8, "path": path}))
    assert loaded["path"] == path


def test_encrypted_export_decrypts_to_the_plain_files(api: Api) -> None:
    model = api.create_model(api.session())
    identity = pyrage.x25519.Identity.generate()
    _export(api, model, 1, "plain")
    _export(api, model, 2, "sealed", age_encryption_recipients=[str(identity.to_public())])
    plain = _urls(api, model, "external_weights/plain").json()["urls"]
    sealed = _urls(api, model, "external_weights/sealed").json()["urls"]
    assert sorted(sealed) == [f"{name}.age" for name in EXPORT_FILES]
    for name in EXPORT_FILES:
        secret = requests.get(sealed[f"{name}.age"], timeout=30).content
        clear = requests.get(plain[name], timeout=30).content
        assert secret[:21] == b"age-encryption.org/v1"
        assert clear not in secret
        assert pyrage.decrypt(secret, [identity]) == clear


def test_official_sdk_export_and_urls(null_server: ServerHandle) -> None:
    with service_client(null_server) as service:
        training = service.create_lora_training_client(base_model=MODEL, rank=4).result()
        training.forward_backward([ce_datum([1, 2, 3, 4])], "cross_entropy").result()
        training.optim_step(types.AdamParams(learning_rate=1e-3)).result()
        saved = training.save_weights_external("final", ttl_seconds=3600).result()
        assert saved.path == f"tinker://{training.model_id}/external_weights/final"
        rest = rest_client(null_server)
        signed = rest.get_external_weights_urls(saved.path).result()
        assert sorted(signed.urls) == EXPORT_FILES
        assert signed.expires.timestamp() > time.time()
        rest.set_checkpoint_ttl_from_tinker_path(saved.path, 3600).result()
        listed = rest.list_checkpoints(training.model_id).result().checkpoints
        (export,) = [c for c in listed if c.tinker_path == saved.path]
        assert export.checkpoint_type == "external"
        rest.delete_checkpoint_from_tinker_path(saved.path).result()
        with pytest.raises(tinker.NotFoundError):
            rest.get_external_weights_urls(saved.path).result()
