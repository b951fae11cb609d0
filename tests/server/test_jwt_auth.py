"""``--jwt-auth``: the key-for-JWT exchange, JWTs on every endpoint, rejections, the official SDK.

Two private null servers: one whose JWTs live 2 s (the official SDK then refreshes before
every request, and a token really expires within a test) and one whose JWTs live 10 minutes
(the SDK keeps its token, so a rejected one exercises its replay). Both serve the test hooks.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from _servers import ServerHandle
from tinker import types

from tinkex_actors.errors import ConfigError, ValidationError
from tinkex_actors.server.auth import tenant_id
from tinkex_actors.server.embedded import EmbeddedServer, generate_api_key
from tinkex_actors.server.settings import ServerSettings

from ._helpers import API, JWT_SHORT_TTL, MODEL, Api
from ._sdk import ce_datum, service_client

DATA = [ce_datum([3 + i, 7 + i, 11 + i, 15 + i]) for i in range(3)]
ADAM = types.AdamParams(learning_rate=1e-3)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _parts(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    header, payload, signature = token.split(".")
    return json.loads(_unb64(header)), json.loads(_unb64(payload)), _unb64(signature)


def _secret(server: ServerHandle) -> bytes:
    return bytes.fromhex((server.data_dir / "jwt_secret.key").read_text().strip())


def _forge(secret: bytes, claims: dict[str, Any], header: dict[str, Any] | None = None) -> str:
    fields = header or {"alg": "HS256", "typ": "JWT"}
    head = _b64(json.dumps(fields, separators=(",", ":")).encode())
    signing_input = f"{head}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def _exchange(server: ServerHandle, key: str | None = None) -> str:
    api = Api(server, key)
    try:
        token: str = api.ok("/auth/token", {})["jwt"]
    finally:
        api.close()
    return token


def _stats(server: ServerHandle) -> dict[str, int]:
    reply = requests.get(
        f"{server.base_url}{API}/_test/auth_stats", headers=server.headers(), timeout=30
    )
    assert reply.status_code == 200, reply.text
    stats: dict[str, int] = reply.json()
    return stats


def _assert_invalid_token(reply: requests.Response, token: str, why: str) -> None:
    assert reply.status_code == 401, reply.text
    assert 'error="invalid_token"' in reply.headers["www-authenticate"]
    detail = reply.json()["detail"]
    assert why in detail, detail
    assert token not in detail


def test_exchange_returns_a_signed_jwt_naming_the_tenant(jwt_short_server: ServerHandle) -> None:
    api = Api(jwt_short_server)
    try:
        assert api.ok("/client/config", {"sdk_version": "0.38.0"})["pjwt_auth_enabled"] is True
        before = time.time()
        token = api.ok("/auth/token", {})["jwt"]
    finally:
        api.close()
    assert token.startswith("eyJ")
    header, claims, signature = _parts(token)
    assert header == {"alg": "HS256", "typ": "JWT"}
    tenant = tenant_id(jwt_short_server.api_key)
    assert claims["sub"] == tenant
    assert claims["org_id"] == tenant
    assert int(before) <= claims["iat"] <= time.time()
    assert claims["exp"] - claims["iat"] >= JWT_SHORT_TTL
    assert claims["exp"] >= before + JWT_SHORT_TTL
    signing_input = token.rsplit(".", 1)[0].encode()
    secret_file = jwt_short_server.data_dir / "jwt_secret.key"
    assert os.stat(secret_file).st_mode & 0o777 == 0o600
    expected = hmac.new(_secret(jwt_short_server), signing_input, hashlib.sha256).digest()
    assert hmac.compare_digest(signature, expected)
    assert jwt_short_server.api_key not in token


def test_a_jwt_stands_for_its_key_and_tenants_stay_apart(jwt_long_server: ServerHandle) -> None:
    mine, theirs = (
        _exchange(jwt_long_server),
        _exchange(jwt_long_server, jwt_long_server.other_api_key),
    )
    as_jwt, as_key = Api(jwt_long_server, mine), Api(jwt_long_server)
    as_other_jwt = Api(jwt_long_server, theirs)
    try:
        session = as_jwt.session()
        model = as_jwt.create_model(session, seed=2)
        assert as_jwt.fwdbwd(model, 1, [_datum()])["metrics"]["loss:sum"] > 0
        assert as_key.post("/session_heartbeat", {"session_id": session}).status_code == 200
        assert session in as_key.get("/sessions").json()["sessions"]
        foreign = as_other_jwt.post("/session_heartbeat", {"session_id": session})
        assert foreign.status_code == 404
        assert session not in as_other_jwt.get("/sessions").json()["sessions"]
        assert as_other_jwt.post("/optim_step", {"model_id": model, "seq_id": 2}).status_code == 404
    finally:
        for api in (as_jwt, as_key, as_other_jwt):
            api.close()


def _datum() -> dict[str, Any]:
    return {
        "model_input": {"chunks": [{"type": "encoded_text", "tokens": [1, 2, 3]}]},
        "loss_fn_inputs": {"target_tokens": {"data": [2, 3, 4], "dtype": "int64", "shape": [3]}},
    }


def test_rejected_jwts_get_401_invalid_token(jwt_long_server: ServerHandle) -> None:
    secret = _secret(jwt_long_server)
    tenant = tenant_id(jwt_long_server.api_key)
    now = int(time.time())
    valid = {"iss": "tinkex-server", "sub": tenant, "org_id": tenant, "iat": now, "exp": now + 60}
    good = _forge(secret, valid)
    header, _, signature = good.split(".")
    other = tenant_id(jwt_long_server.other_api_key)
    swapped = _b64(json.dumps({**valid, "sub": other, "org_id": other}).encode())
    cases = {
        _forge(secret, {**valid, "iat": now - 120, "exp": now - 60}): "expired",
        f"{header}.{swapped}.{signature}": "signature does not verify",
        _forge(b"x" * 32, valid): "signature does not verify",
        _forge(secret, {**valid, "sub": "tenant-unknown"}): "no longer accepted",
        _forge(secret, valid, {"alg": "none", "typ": "JWT"}): "not issued by this server",
        _forge(secret, {**valid, "iss": "someone-else"}): "malformed JWT claims",
        "eyJub3QgYSB0b2tlbg": "malformed JWT",
    }
    url = f"{jwt_long_server.base_url}{API}/get_server_capabilities"
    with requests.Session() as http:
        assert http.get(url, headers={"X-API-Key": good}, timeout=30).status_code == 200
        for token, why in cases.items():
            reply = http.get(url, headers={"X-API-Key": token}, timeout=30)
            _assert_invalid_token(reply, token, why)


def test_an_issued_jwt_expires(jwt_short_server: ServerHandle) -> None:
    token = _exchange(jwt_short_server)
    _, claims, _ = _parts(token)
    url = f"{jwt_short_server.base_url}{API}/get_server_capabilities"
    assert requests.get(url, headers={"X-API-Key": token}, timeout=30).status_code == 200
    time.sleep(max(0.0, claims["exp"] - time.time()) + 0.1)
    _assert_invalid_token(
        requests.get(url, headers={"X-API-Key": token}, timeout=30), token, "expired"
    )


def test_only_a_key_can_be_exchanged(jwt_long_server: ServerHandle) -> None:
    token = _exchange(jwt_long_server)
    url = f"{jwt_long_server.base_url}{API}/auth/token"
    with requests.Session() as http:
        by_jwt = http.post(url, json={}, headers={"X-API-Key": token}, timeout=30)
        assert by_jwt.status_code == 401
        assert "not a JWT" in by_jwt.json()["detail"]
        assert "invalid_token" not in by_jwt.headers.get("www-authenticate", "")
        for headers in ({}, {"X-API-Key": "tml-not-a-known-key"}):
            reply = http.post(url, json={}, headers=headers, timeout=30)
            assert reply.status_code == 401
            assert "invalid_token" not in reply.headers["www-authenticate"]


def test_a_server_without_jwt_auth_refuses_the_exchange(null_server: ServerHandle) -> None:
    api = Api(null_server)
    try:
        assert "pjwt_auth_enabled" not in api.ok("/client/config", {"sdk_version": "0.38.0"})
        reply = api.post("/auth/token", {})
        assert reply.status_code == 404
        assert "--jwt-auth" in reply.json()["detail"]
    finally:
        api.close()
    lookalike = "eyJhbGciOiJIUzI1NiJ9.e30.c2ln"
    reply = requests.get(
        f"{null_server.base_url}{API}/get_server_capabilities",
        headers={"X-API-Key": lookalike},
        timeout=30,
    )
    assert reply.status_code == 401
    assert "invalid_token" not in reply.headers["www-authenticate"]


def test_official_sdk_trains_and_samples_across_token_refreshes(
    jwt_short_server: ServerHandle,
) -> None:
    issued_before = _stats(jwt_short_server)["issued"]
    started = time.time()
    with service_client(jwt_short_server) as service:
        training = service.create_lora_training_client(base_model=MODEL, rank=4, seed=7).result()
        sampler = service.create_sampling_client(base_model=MODEL).result()
        losses = []
        for _ in range(3):
            step = training.forward_backward(DATA, "cross_entropy")
            training.optim_step(ADAM).result()
            losses.append(step.result().metrics["loss:sum"])
            prompt = types.ModelInput.from_ints([5, 6, 7])
            params = types.SamplingParams(max_tokens=3, seed=1)
            assert len(sampler.sample(prompt, 1, params).result().sequences[0].tokens) == 3
            time.sleep(JWT_SHORT_TTL + 0.2)  # every token the SDK held so far has expired
        assert losses[-1] < losses[0]
    elapsed = time.time() - started
    stats = _stats(jwt_short_server)
    # Tokens live 2 s and the run took several times that: it went through many of them.
    assert elapsed > 3 * JWT_SHORT_TTL
    assert stats["issued"] - issued_before >= 3
    assert stats["accepted"] >= 10


def test_official_sdk_replays_once_after_invalid_token(jwt_long_server: ServerHandle) -> None:
    with service_client(jwt_long_server) as service:
        training = service.create_lora_training_client(base_model=MODEL, rank=4, seed=8).result()
        training.forward_backward(DATA, "cross_entropy").result()
        before = _stats(jwt_long_server)
        rotate = requests.post(
            f"{jwt_long_server.base_url}{API}/_test/rotate_jwt_secret",
            json={},
            headers=jwt_long_server.headers(),
            timeout=30,
        )
        assert rotate.status_code == 200
        # The SDK still holds a token with ten minutes to live, now rejected: it exchanges
        # its key for a new one and replays the request.
        assert training.optim_step(ADAM).result().metrics
        after = _stats(jwt_long_server)
    assert after["rejected"] > before["rejected"]
    assert after["issued"] > before["issued"]


def test_jwts_stay_valid_across_a_restart(jwt_long_server: ServerHandle) -> None:
    token = _exchange(jwt_long_server)
    assert jwt_long_server.restart() == 0
    url = f"{jwt_long_server.base_url}{API}/get_server_capabilities"
    assert requests.get(url, headers={"X-API-Key": token}, timeout=30).status_code == 200


def test_jwt_settings_are_checked(tmp_path: Path) -> None:
    key = generate_api_key()
    with pytest.raises(ConfigError, match="--jwt-auth"):
        ServerSettings(data_dir=tmp_path, api_keys=(key,), client_config={"pjwt_auth_enabled": 1})
    with pytest.raises(ConfigError, match="jwt_ttl"):
        ServerSettings(data_dir=tmp_path, api_keys=(key,), jwt_auth=True, jwt_ttl=0)
    with pytest.raises(ValidationError, match="JWT lifetime"):
        EmbeddedServer("null", jwt_ttl=0)
    with pytest.raises(ValidationError, match="session timeout"):
        EmbeddedServer("null", session_timeout=0)
    assert list(tmp_path.iterdir()) == []  # nothing was started or written
