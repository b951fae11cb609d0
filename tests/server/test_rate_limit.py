"""``--rate-limit KEY=N``: per-tenant token buckets on asample, 429 with retry-after."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tinkex_actors.cli import main as tinkex_main
from tinkex_actors.errors import ConfigError
from tinkex_actors.server.auth import generate_api_key, tenant_id
from tinkex_actors.server.embedded import EmbeddedServer
from tinkex_actors.server.rate_limit import SampleRateLimiter
from tinkex_actors.server.settings import ServerSettings

from ._helpers import API, MODEL

LIMITED, FREE = generate_api_key(), generate_api_key()
RATE = 2.0
SAMPLE = {
    "base_model": MODEL,
    "prompt": {"chunks": [{"type": "encoded_text", "tokens": [1, 2, 3]}]},
    "sampling_params": {"max_tokens": 2, "seed": 1},
}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_holds_one_second_and_refills_at_the_rate() -> None:
    clock = Clock()
    limiter = SampleRateLimiter({LIMITED: 3.0}, clock=clock)
    limited = tenant_id(LIMITED)
    assert [limiter.admit(limited) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.admit(limited) == pytest.approx(1 / 3)
    clock.now += 0.34
    assert limiter.admit(limited) == 0.0
    clock.now += 10  # refills to capacity only
    assert [limiter.admit(limited) for _ in range(4)][-1] > 0
    # A tenant without a limit is never counted.
    assert all(limiter.admit(tenant_id(FREE)) == 0.0 for _ in range(100))
    assert LIMITED not in repr(limiter)


def test_a_slow_rate_still_admits_one_request() -> None:
    clock = Clock()
    limiter = SampleRateLimiter({LIMITED: 0.5}, clock=clock)
    assert limiter.admit(tenant_id(LIMITED)) == 0.0
    assert limiter.admit(tenant_id(LIMITED)) == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("rates", "wanted"),
    [({"tml-unknown": 1.0}, "not one of the API keys"), ({LIMITED: 0.0}, "rate > 0")],
)
def test_settings_reject_bad_limits_without_showing_keys(
    rates: dict[str, float], wanted: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=wanted) as info:
        ServerSettings(data_dir=tmp_path, api_keys=(LIMITED,), rate_limits=rates)
    assert info.value.field == "rate_limits"
    assert LIMITED not in str(info.value)
    assert "tml-unknown" not in str(info.value)
    assert LIMITED not in repr(
        ServerSettings(data_dir=tmp_path, api_keys=(LIMITED,), rate_limits={LIMITED: 1.0})
    )


@pytest.mark.parametrize("value", ["fast", "-1", "nan"])
def test_cli_refuses_a_bad_rate(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "server",
        "--engine",
        "null",
        "--api-key",
        LIMITED,
        "--rate-limit",
        f"{LIMITED}={value}",
    ]
    assert tinkex_main(argv) == 2
    err = capsys.readouterr().err
    assert "rate_limits" in err
    assert LIMITED not in err


@pytest.fixture(scope="module")
def limited_server() -> Iterator[EmbeddedServer]:
    with EmbeddedServer(
        "null",
        api_key=FREE,
        extra_api_keys=(LIMITED,),
        extra_args=("--rate-limit", f"{LIMITED}={RATE:g}"),
    ) as server:
        yield server


def _burst(server: EmbeddedServer, key: str, count: int) -> list[requests.Response]:
    with requests.Session() as http:
        return [
            http.post(
                f"{server.base_url}{API}/asample",
                json=SAMPLE,
                headers={"X-API-Key": key},
                timeout=30,
            )
            for _ in range(count)
        ]


def test_limited_tenant_gets_429_with_retry_after_and_others_do_not(
    limited_server: EmbeddedServer,
) -> None:
    free = _burst(limited_server, FREE, 8)
    assert [r.status_code for r in free] == [200] * 8
    limited = _burst(limited_server, LIMITED, 5)
    codes = [r.status_code for r in limited]
    assert codes[:2] == [200, 200]  # a bucket of one second's worth
    assert 429 in codes[2:]
    refused = next(r for r in limited if r.status_code == 429)
    assert refused.headers["retry-after"] == "1"
    wait_ms = int(refused.headers["retry-after-ms"])
    assert 0 < wait_ms <= 1000 / RATE
    assert "rate limit" in refused.json()["detail"]
    # The free tenant is still unthrottled while the limited one is refused.
    assert all(r.status_code == 200 for r in _burst(limited_server, FREE, 4))
    time.sleep(wait_ms / 1000 + 0.05)
    assert _burst(limited_server, LIMITED, 1)[0].status_code == 200
