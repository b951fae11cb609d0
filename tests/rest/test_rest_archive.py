"""get_checkpoint_archive_url's answer forms (200 JSON, 302 + Location/Expires) and 503 waits.

The embedded server always answers 200 JSON, so the other forms come from a scripted local
HTTP server; waits go to a SleepRecorder instead of the clock.
"""

from __future__ import annotations

import datetime as dt
import http.server
from collections.abc import Iterator

import orjson
import pytest

from tinkex_actors import Config
from tinkex_actors._constants import ARCHIVE_MAX_ATTEMPTS, ARCHIVE_RETRY_DELAY
from tinkex_actors.errors import (
    ConflictError,
    InternalServerError,
    NotFoundError,
    ResponseDecodeError,
)
from tinkex_actors.rest import RestClient
from tinkex_actors.testing import SleepRecorder

from ._helpers import ScriptedServer, reply, scripted_server

RUN = "sess:train:0"
ROUTE = f"/api/v1/training_runs/{RUN}/checkpoints/weights/w1/archive"
PATH = f"tinker://{RUN}/weights/w1"


@pytest.fixture
def fake() -> Iterator[ScriptedServer]:
    with scripted_server() as server:
        yield server


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
def client(fake: ScriptedServer, sleeps: SleepRecorder) -> Iterator[RestClient]:
    config = Config(api_key="tml-scripted-key-0000", base_url=fake.base_url, max_retries=2)
    with RestClient(config, sleep=sleeps) as rest:
        yield rest


def _requests_to(fake: ScriptedServer, route: str) -> int:
    return sum(1 for path, _ in fake.seen if path.split("?")[0] == route)


def test_200_json(fake: ScriptedServer, client: RestClient) -> None:
    body = orjson.dumps(
        {"url": "https://cdn.example/a.tar?sig=1", "expires": "2030-01-02T03:04:05Z"}
    )
    fake.routes[ROUTE] = lambda h: reply(h, 200, body, {"Content-Type": "application/json"})
    answer = client.get_checkpoint_archive_url(PATH)
    assert answer.url == "https://cdn.example/a.tar?sig=1"
    assert answer.expires == dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    _path, headers = fake.seen[0]
    assert headers["accept"] == "application/json"
    assert headers["x-api-key"] == "tml-scripted-key-0000"  # the base URL's own origin


def test_302_with_location_and_expires(fake: ScriptedServer, client: RestClient) -> None:
    fake.routes[ROUTE] = lambda h: reply(
        h,
        302,
        headers={"Location": "/files/a.tar?sig=2", "Expires": "Wed, 02 Jan 2030 03:04:05 GMT"},
    )
    answer = client.get_checkpoint_archive_url(RUN, "weights/w1")
    assert answer.url == f"{fake.base_url}/files/a.tar?sig=2"  # relative Location resolved
    assert answer.expires == dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert _requests_to(fake, "/files/a.tar") == 0  # the redirect is read, not followed


def test_302_without_expires_assumes_15_minutes(fake: ScriptedServer, client: RestClient) -> None:
    fake.routes[ROUTE] = lambda h: reply(h, 307, headers={"Location": "https://cdn.example/x"})
    before = dt.datetime.now(dt.UTC)
    answer = client.get_checkpoint_archive_url_by_tinker_path(PATH)
    assert answer.url == "https://cdn.example/x"
    assert before + dt.timedelta(minutes=15) <= answer.expires
    assert answer.expires <= dt.datetime.now(dt.UTC) + dt.timedelta(minutes=15, seconds=1)


def test_redirect_without_location_is_a_decode_error(
    fake: ScriptedServer, client: RestClient
) -> None:
    fake.routes[ROUTE] = lambda h: reply(h, 302)
    with pytest.raises(ResponseDecodeError, match="Location"):
        client.get_checkpoint_archive_url(PATH)


def _script(fake: ScriptedServer, answers: list[tuple[int, dict[str, str]]]) -> None:
    final = orjson.dumps({"url": "https://cdn.example/ok", "expires": "2030-01-01T00:00:00Z"})

    def route(handler: http.server.BaseHTTPRequestHandler) -> None:
        if answers:
            status, headers = answers.pop(0)
            reply(handler, status, b'{"detail": "archive still being generated"}', headers)
        else:
            reply(handler, 200, final, {"Content-Type": "application/json"})

    fake.routes[ROUTE] = route


def test_503_waits_then_succeeds(
    fake: ScriptedServer, client: RestClient, sleeps: SleepRecorder
) -> None:
    _script(fake, [(503, {}), (503, {})])
    assert client.get_checkpoint_archive_url(PATH).url == "https://cdn.example/ok"
    assert sleeps.delays == [ARCHIVE_RETRY_DELAY, ARCHIVE_RETRY_DELAY]
    assert _requests_to(fake, ROUTE) == 3


def test_503_honours_a_shorter_retry_after(
    fake: ScriptedServer, client: RestClient, sleeps: SleepRecorder
) -> None:
    _script(fake, [(503, {"retry-after-ms": "250"}), (503, {"Retry-After": "3600"})])
    assert client.get_checkpoint_archive_url(PATH).url == "https://cdn.example/ok"
    # A longer request than the bound (or beyond the honoured range) waits the bound.
    assert sleeps.delays == [0.25, ARCHIVE_RETRY_DELAY]


def test_503_wait_is_bounded(
    fake: ScriptedServer, client: RestClient, sleeps: SleepRecorder
) -> None:
    _script(fake, [(503, {})] * 50)
    with pytest.raises(InternalServerError) as info:
        client.get_checkpoint_archive_url(PATH)
    assert info.value.status_code == 503
    assert _requests_to(fake, ROUTE) == ARCHIVE_MAX_ATTEMPTS
    assert sleeps.delays == [ARCHIVE_RETRY_DELAY] * (ARCHIVE_MAX_ATTEMPTS - 1)


def test_other_errors_retry_like_the_transport(
    fake: ScriptedServer, client: RestClient, sleeps: SleepRecorder
) -> None:
    _script(fake, [(500, {}), (429, {"retry-after-ms": "10"})])
    assert client.get_checkpoint_archive_url(PATH).url == "https://cdn.example/ok"
    assert len(sleeps.delays) == 2
    assert sleeps.delays[1] == 0.01
    fake.routes[ROUTE] = lambda h: reply(h, 404, b'{"detail": "no such checkpoint"}')
    with pytest.raises(NotFoundError):
        client.get_checkpoint_archive_url(PATH)
    assert len(sleeps.delays) == 2  # 404 is not retried


def test_publish_conflict_is_final(
    fake: ScriptedServer, client: RestClient, sleeps: SleepRecorder
) -> None:
    # 409 means "already public": a final answer, as a 409 is for every call.
    base = f"/api/v1/training_runs/{RUN}"
    fake.routes[f"{base}/checkpoints/weights/w1/publish"] = lambda h: reply(h, 409, b"{}")
    fake.routes[base] = lambda h: reply(h, 409, b"{}")
    with pytest.raises(ConflictError):
        client.publish_checkpoint(PATH)
    with pytest.raises(ConflictError):
        client.unpublish_checkpoint_from_tinker_path(PATH)
    assert _requests_to(fake, f"{base}/checkpoints/weights/w1/publish") == 2
    assert sleeps.delays == []
    with pytest.raises(ConflictError):
        client.get_training_run(RUN)
    assert _requests_to(fake, base) == 1
    retried = {"x-should-retry": "true"}
    fake.routes[base] = lambda h: reply(h, 409, b"{}", retried)
    with pytest.raises(ConflictError):
        client.get_training_run(RUN)  # the server says a retry may help: max_retries=2
    assert _requests_to(fake, base) == 4
