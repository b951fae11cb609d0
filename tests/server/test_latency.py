"""The latency model: ``--sample-latency-ms``, ``--train-latency-ms``, ``--network-delay-ms``
(through :class:`EmbeddedServer`'s options), and the ``--debug-stats`` counters.

The lower bounds (a result is never visible before its latency) are the model's contract.
The one upper bound (100 samples at 500 ms in well under 5 s, where serialized they would
take 50 s) tells "in parallel" from "one after another", with a margin of about 4x.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from _servers import ServerHandle

from tinkex_actors.errors import ConfigError, ValidationError
from tinkex_actors.server.embedded import EmbeddedServer
from tinkex_actors.server.settings import ServerSettings

from ._helpers import MODEL, Api, datum_json

SAMPLE_S, TRAIN_S, NETWORK_S = 0.5, 0.3, 0.05
STATS = "/_debug/stats"
FANOUT = 100


@pytest.fixture(scope="module")
def slow_server() -> Iterator[EmbeddedServer]:
    with EmbeddedServer(
        "null",
        sample_latency_ms=SAMPLE_S * 1000,
        train_latency_ms=TRAIN_S * 1000,
        network_delay_ms=NETWORK_S * 1000,
        extra_args=("--debug-stats", "--poll-hold-seconds=5"),
    ) as server:
        yield server


@pytest.fixture
def slow(slow_server: EmbeddedServer) -> Iterator[Api]:
    # Api needs only base_url and api_key, which EmbeddedServer has.
    client = Api(slow_server)  # type: ignore[arg-type]
    yield client
    client.close()


def _stats(api: Api, reset: bool = False) -> dict[str, int]:
    url = f"{api.server.base_url}{STATS}" + ("/reset" if reset else "")
    reply = api.http.request("POST" if reset else "GET", url, headers={"X-API-Key": api.api_key})
    assert reply.status_code == 200, reply.text
    stats: dict[str, int] = reply.json()
    return stats


def _sample_body(index: int, **where: Any) -> dict[str, Any]:
    return {
        "prompt": {"chunks": [{"type": "encoded_text", "tokens": [5 + index, 6]}]},
        "sampling_params": {"max_tokens": 4, "seed": index},
        "num_samples": 1,
        **where,
    }


def _sampler(api: Api) -> str:
    reply = api.ok(
        "/create_sampling_session",
        {"session_id": api.session(), "sampling_session_seq_id": 0, "base_model": MODEL},
    )
    return str(reply["sampling_session_id"])


def _collect(api: Api, sampler_id: str, want: int) -> list[tuple[str, float]]:
    """retrieve_futures until ``want`` completions: (request id, when it was reported)."""
    seen: list[tuple[str, float]] = []
    cursor = 0
    deadline = time.monotonic() + 60
    while len(seen) < want:
        assert time.monotonic() < deadline
        body = {"target": {"sampling_session_id": sampler_id}, "prev_cursor": cursor}
        answer = api.ok("/retrieve_futures", body)
        now = time.monotonic()
        seen += [(c["request_id"], now) for c in answer["completions"]]
        cursor = answer["cursor"]
    return seen


def test_every_answer_crosses_the_network_delay(slow_server: EmbeddedServer) -> None:
    with requests.Session() as http:
        for headers in ({}, {"X-API-Key": slow_server.api_key}):
            started = time.monotonic()
            reply = http.post(
                f"{slow_server.base_url}/api/v1/client/config", json={}, headers=headers, timeout=30
            )
            assert time.monotonic() - started >= NETWORK_S
            assert reply.status_code == (200 if headers else 401)


def test_a_sample_is_visible_no_sooner_than_its_latency(slow: Api) -> None:
    started = time.monotonic()
    future = slow.ok("/asample", _sample_body(0, base_model=MODEL))
    result = slow.result(future)  # held by the server until the sample is visible
    assert time.monotonic() - started >= SAMPLE_S
    assert len(result["sequences"][0]["tokens"]) == 4


def test_many_samples_wait_in_parallel_and_are_counted_in_flight(slow: Api) -> None:
    sampler_id = _sampler(slow)
    _stats(slow, reset=True)
    before = _stats(slow)

    def submit(index: int) -> tuple[str, float]:
        client = Api(slow.server)
        try:
            at = time.monotonic()
            body = _sample_body(index, sampling_session_id=sampler_id, seq_id=index)
            return str(client.ok("/asample", body)["request_id"]), at
        finally:
            client.close()

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        submitted = dict(pool.map(submit, range(FANOUT)))
    reported = _collect(slow, sampler_id, FANOUT)
    elapsed = time.monotonic() - started
    assert sorted(r for r, _ in reported) == sorted(submitted)
    for request_id, when in reported:
        assert when - submitted[request_id] >= SAMPLE_S
    assert elapsed < 5.0, f"{FANOUT} samples at {SAMPLE_S} s took {elapsed:.1f} s"

    stats = _stats(slow)
    assert stats["samples_submitted"] - before["samples_submitted"] == FANOUT
    # None was fetched yet: all of them are in flight, and were at once.
    assert stats["samples_in_flight"] - before["samples_in_flight"] == FANOUT
    assert stats["samples_in_flight_peak"] >= FANOUT
    assert stats["samples_pending_peak"] >= FANOUT // 2
    body = {
        "target": {"sampling_session_id": sampler_id},
        "prev_cursor": 0,
        "timeout": 0,
        "retrieved_request_ids": list(submitted),
    }
    slow.ok("/retrieve_futures", body)
    assert _stats(slow)["samples_in_flight"] == before["samples_in_flight"]


def test_completions_come_in_the_order_their_latency_ends(slow: Api) -> None:
    sampler_id = _sampler(slow)
    first = slow.ok("/asample", _sample_body(1, sampling_session_id=sampler_id, seq_id=1))
    time.sleep(SAMPLE_S / 2)
    second = slow.ok("/asample", _sample_body(0, sampling_session_id=sampler_id, seq_id=0))
    order = [request_id for request_id, _ in _collect(slow, sampler_id, 2)]
    assert order == [first["request_id"], second["request_id"]]


def test_training_requests_take_the_latency_in_order_with_the_same_numbers(
    slow: Api, api: Api
) -> None:
    data = [datum_json([5, 6, 7, 8], [6, 7, 8, 9])]
    losses: dict[str, list[float]] = {}
    for name, client in (("slow", slow), ("plain", api)):
        model = client.create_model(client.session(), seed=3)
        timings = []
        steps = []
        for seq in (1, 3):
            started = time.monotonic()
            result = client.fwdbwd(model, seq, data)
            timings.append(time.monotonic() - started)
            steps.append(result["metrics"]["loss:sum"])
            started = time.monotonic()
            client.optim(model, seq + 1, lr=0.1)
            timings.append(time.monotonic() - started)
        losses[name] = steps
        if name == "slow":
            assert min(timings) >= TRAIN_S
    # The engine's numbers are unchanged by the latency, and the optim_step ran in between.
    assert losses["slow"] == losses["plain"]
    assert losses["slow"][0] != losses["slow"][1]


def test_debug_stats_are_off_by_default(null_server: ServerHandle) -> None:
    reply = requests.get(
        f"{null_server.base_url}{STATS}", headers=null_server.headers(), timeout=30
    )
    assert reply.status_code == 404


def test_bad_latency_settings_are_refused(tmp_path: Any) -> None:
    for name in ("sample_latency_ms", "train_latency_ms", "network_delay_ms"):
        with pytest.raises(ConfigError, match=name):
            ServerSettings(data_dir=tmp_path, api_keys=("tml-x",), **{name: -1.0})
        with pytest.raises(ConfigError, match=name):
            ServerSettings(data_dir=tmp_path, api_keys=("tml-x",), **{name: float("nan")})
        with pytest.raises(ValidationError, match="milliseconds"):
            EmbeddedServer("null", **{name: -5.0})
