"""Our SDK on a server with JWT auth (``--jwt-auth``): exchange, renewal, replay, commands.

Two private null servers with the test hooks: one whose JWTs live 2 s (so a few seconds of
training and sampling span several renewals) and one whose JWTs live 10 minutes (so a token is
refused only when the test rotates the signing secret). The server's counters
(``_test/auth_stats``) say how many JWTs it issued, accepted and refused.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import requests
from _servers import ServerHandle, new_api_key

from tinkex_actors import ServiceClient
from tinkex_actors.config import Config
from tinkex_actors.errors import AuthenticationError, ConfigError
from tinkex_actors.types import AdamParams, Datum, ModelInput, SamplingParams

from ._helpers import API, JWT_SHORT_TTL, MODEL

PROMPT = ModelInput.from_ints([3, 4, 5, 6])
PARAMS = SamplingParams(max_tokens=4, seed=7)
ADAM = AdamParams(learning_rate=1e-2)
DATA = [
    Datum(
        ModelInput.from_ints([3 + i, 7 + i, 11 + i]),
        {"target_tokens": [7 + i, 11 + i, 15 + i], "weights": [1.0, 1.0, 1.0]},
    )
    for i in range(3)
]


def _stats(server: ServerHandle) -> dict[str, int]:
    reply = requests.get(
        f"{server.base_url}{API}/_test/auth_stats", headers=server.headers(), timeout=30
    )
    assert reply.status_code == 200, reply.text
    stats: dict[str, int] = reply.json()
    return stats


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {name: after[name] - before[name] for name in before}


def _config(server: ServerHandle, **options: object) -> Config:
    options.setdefault("api_key", server.api_key)
    return Config(base_url=server.base_url, telemetry_enabled=False, **options)  # type: ignore[arg-type]


def test_training_and_sampling_span_several_renewals(jwt_short_server: ServerHandle) -> None:
    before = _stats(jwt_short_server)
    config = _config(jwt_short_server, heartbeat_interval=0.3)  # the heartbeat renews too
    with ServiceClient(config) as service:
        assert service._runtime.transport.auth.mode == "jwt"
        training = service.create_lora_training_client(MODEL, {"rank": 4, "seed": 3})
        sampler = service.create_sampling_client(base_model=MODEL)
        expected = sampler.sample(PROMPT, PARAMS).result(30).sequences[0].tokens
        losses: list[float] = []
        stop = time.monotonic() + 3 * JWT_SHORT_TTL
        while time.monotonic() < stop:
            step = training.forward_backward(DATA, "cross_entropy")
            training.optim_step(ADAM).result(30)
            losses.append(step.result(30).metrics["loss:sum"])
            assert sampler.sample(PROMPT, PARAMS).result(30).sequences[0].tokens == expected
    seen = _delta(before, _stats(jwt_short_server))
    assert len(losses) >= 3
    assert losses[-1] < losses[0]
    assert seen["issued"] >= 4, seen  # a 2-3 s token is renewed when under half is left
    assert seen["rejected"] == 0, seen  # always renewed before it expired
    assert seen["accepted"] > 2 * seen["issued"]  # each token serves many requests


def test_a_refused_jwt_is_replaced_once_and_every_request_replayed(
    jwt_long_server: ServerHandle,
) -> None:
    with ServiceClient(_config(jwt_long_server)) as service:
        training = service.create_lora_training_client(MODEL, {"rank": 4})
        sampler = service.create_sampling_client(base_model=MODEL)
        expected = sampler.sample(PROMPT, PARAMS).result(30).sequences[0].tokens
        before = _stats(jwt_long_server)
        rotated = requests.post(
            f"{jwt_long_server.base_url}{API}/_test/rotate_jwt_secret",
            headers=jwt_long_server.headers(),
            json={},
            timeout=30,
        )
        assert rotated.status_code == 200
        # Many requests hit the refused token at once; each is replayed once, and they
        # share one new token.
        futures = [sampler.sample(PROMPT, PARAMS) for _ in range(8)]
        step = training.forward_backward(DATA, "cross_entropy")
        assert [f.result(30).sequences[0].tokens for f in futures] == [expected] * 8
        assert step.result(30).metrics["loss:sum"] > 0
        seen = _delta(before, _stats(jwt_long_server))
    assert seen["issued"] == 1, seen
    assert seen["rejected"] >= 1, seen


def test_a_credential_command_is_run_for_every_exchange(
    jwt_short_server: ServerHandle, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    key_file = tmp_path / "key"
    key_file.write_text(jwt_short_server.api_key)
    command = f"echo run >> {runs}; cat {key_file}"
    before = _stats(jwt_short_server)
    with ServiceClient(_config(jwt_short_server, api_key=None, credential_cmd=command)) as service:
        sampler = service.create_sampling_client(base_model=MODEL)
        stop = time.monotonic() + 2 * JWT_SHORT_TTL
        while time.monotonic() < stop:
            sampler.sample(PROMPT, PARAMS).result(30)
            time.sleep(0.1)
    seen = _delta(before, _stats(jwt_short_server))
    count = runs.read_text().count("run")
    assert seen["issued"] >= 3, seen
    # Once for client/config (no JWT yet, the output is the key), then once per exchange:
    # a source, re-run each time a fresh credential is needed, never frozen.
    assert count == seen["issued"] + 1, (count, seen)
    assert seen["rejected"] == 0, seen


def test_a_failing_credential_command_fails_the_construction(
    jwt_short_server: ServerHandle,
) -> None:
    config = _config(jwt_short_server, api_key=None, credential_cmd="echo oops >&2; exit 3")
    with pytest.raises(ConfigError) as info:
        ServiceClient(config)
    assert info.value.field == "credential_cmd"
    assert "exit status 3" in str(info.value)
    names = {thread.name for thread in threading.enumerate()}
    assert not any(name.startswith("tinkex-heartbeat") for name in names)


def test_a_refused_key_fails_the_construction(jwt_short_server: ServerHandle) -> None:
    with pytest.raises(AuthenticationError):
        ServiceClient(_config(jwt_short_server, api_key=new_api_key()))
