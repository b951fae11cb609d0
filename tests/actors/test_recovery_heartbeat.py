"""The heartbeat's part in recovery: when a 404 / 410 means the session is gone.

Scripted answers (``FakeBackend``) drive one :class:`Heartbeat` beat by beat: the server's
real answers are covered end to end in ``tests/reliability/test_recovery.py``; these pin down
the rules. A 410 always means the session is gone; a 404 only when its body names the session
(a server without the endpoint answers 404 too, and that must never trigger a recovery). Once
gone, the heartbeat reports it once and pauses until it is re-pointed at the new session.
"""

from __future__ import annotations

import orjson

from tinkex_actors.actors._session import Heartbeat
from tinkex_actors.config import Config
from tinkex_actors.errors import APIStatusError, GoneError, NotFoundError
from tinkex_actors.testing import FakeBackend
from tinkex_actors.transport import HTTPTransport

CONFIG = Config(api_key="tml-unit-heartbeat-key", base_url="http://127.0.0.1:9")


def _sessions(backend: FakeBackend) -> list[str]:
    return [orjson.loads(sent.body or b"")["session_id"] for sent in backend.sent]


def test_a_404_naming_the_session_reports_it_gone_once_and_pauses_until_rebound() -> None:
    backend = FakeBackend(
        [
            FakeBackend.reply(200, b"{}"),
            FakeBackend.reply(404, b'{"detail": "Not Found"}'),  # no endpoint: not a loss
            FakeBackend.reply(404, b'{"detail": "unknown session \'s-1\'"}'),
            FakeBackend.reply(200, b"{}"),
        ]
    )
    gone: list[tuple[str, APIStatusError]] = []
    with HTTPTransport(CONFIG, backend=backend) as transport:
        heartbeat = Heartbeat(
            transport, "s-1", interval=60.0, on_gone=lambda s, e: gone.append((s, e))
        )
        assert heartbeat.beat()
        assert heartbeat.beat()
        assert gone == []
        assert heartbeat.failures == 1
        assert heartbeat.beat()  # the session is gone: reported, the loop goes on
        assert [session for session, _ in gone] == ["s-1"]
        assert isinstance(gone[0][1], NotFoundError)
        sent = len(backend.sent)
        assert heartbeat.beat()  # paused: nothing sent for a session known to be gone
        assert heartbeat.beat()
        assert len(backend.sent) == sent
        assert len(gone) == 1
        heartbeat.rebind("s-2")
        assert heartbeat.session_id == "s-2"
        assert heartbeat.beat()
        assert heartbeat.beats == 2
    assert _sessions(backend) == ["s-1", "s-1", "s-1", "s-2"]


def test_a_410_is_gone_whatever_its_body_and_stops_a_heartbeat_without_recovery() -> None:
    backend = FakeBackend(
        [FakeBackend.reply(410, b'{"detail": "finished"}'), FakeBackend.reply(410, b"{}")]
    )
    gone: list[str] = []
    with HTTPTransport(CONFIG, backend=backend) as transport:
        recovering = Heartbeat(transport, "s-1", interval=60.0, on_gone=lambda s, e: gone.append(s))
        assert recovering.beat()
        assert gone == ["s-1"]
        plain = Heartbeat(transport, "s-9", interval=60.0)
        assert not plain.beat()  # no recovery: the loop stops, as it always did
    assert _sessions(backend) == ["s-1", "s-9"]


def test_a_report_for_a_session_already_replaced_is_dropped() -> None:
    # The heartbeat's 410 for the old session arrives after the recovery re-pointed it.
    gone: list[str] = []
    backend = FakeBackend([FakeBackend.reply(200, b"{}")])
    with HTTPTransport(CONFIG, backend=backend) as transport:
        heartbeat = Heartbeat(transport, "s-1", interval=60.0, on_gone=lambda s, e: gone.append(s))
        heartbeat.rebind("s-2")
        error = GoneError("gone", status_code=410, body=b"{}")
        assert heartbeat._session_gone("s-1", error)
        assert gone == []
        assert heartbeat.beat()  # still beating for s-2
    assert _sessions(backend) == ["s-2"]
