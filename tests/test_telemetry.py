""":telemetry-style events: attach/detach, failure isolation, spans, the structlog logger."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from tinkex_actors import telemetry
from tinkex_actors._logging import LOGGER_NAME
from tinkex_actors.errors import ValidationError

Seen = list[tuple[tuple[str, ...], dict[str, Any], dict[str, Any], Any]]


@pytest.fixture(autouse=True)
def _detach_test_handlers() -> Iterator[None]:
    before = {h.id for h in telemetry.list_handlers()}
    yield
    for handler in telemetry.list_handlers():
        if handler.id not in before:
            telemetry.detach(handler.id)


def recorder(seen: Seen) -> telemetry.Handler:
    def handle(event: Any, measurements: Any, metadata: Any, config: Any) -> None:
        seen.append((event, dict(measurements), dict(metadata), config))

    return handle


def test_attach_execute_detach() -> None:
    seen: Seen = []
    telemetry.attach("t1", ("app", "step"), recorder(seen), config={"k": 1})
    assert telemetry.enabled(("app", "step"))
    telemetry.execute(("app", "step"), {"n": 1}, {"who": "me"})
    telemetry.execute(("app", "other"), {"n": 2}, {})
    assert seen == [(("app", "step"), {"n": 1}, {"who": "me"}, {"k": 1})]
    assert telemetry.detach("t1") is True
    assert telemetry.detach("t1") is False
    telemetry.execute(("app", "step"), {"n": 3})
    assert len(seen) == 1
    assert not telemetry.enabled(("app", "step"))


def test_many_events_order_and_listing() -> None:
    seen: Seen = []
    telemetry.attach("first", [("app", "a"), ("app", "b")], recorder(seen))
    telemetry.attach("second", ("app", "a"), lambda *a: seen.append((("second",), {}, {}, None)))
    telemetry.execute(("app", "a"), {})
    assert [s[0] for s in seen] == [("app", "a"), ("second",)]
    assert {h.id for h in telemetry.list_handlers(("app",))} >= {"first", "second"}
    assert [h.id for h in telemetry.list_handlers(("app", "b"))] == ["first"]
    assert telemetry.list_handlers(("nothing",)) == []


def test_attach_rejects_bad_input() -> None:
    telemetry.attach("dup", ("app", "x"), lambda *a: None)
    with pytest.raises(ValidationError) as info:
        telemetry.attach("dup", ("app", "x"), lambda *a: None)
    assert info.value.field == "handler_id"
    for events, field in [((), "events"), ([("ok",), ("",)], "events[1]"), ("app", "events")]:
        with pytest.raises(ValidationError) as info:
            telemetry.attach("bad-events", events, lambda *a: None)  # type: ignore[arg-type]
        assert info.value.field == field
    with pytest.raises(ValidationError) as info:
        telemetry.attach("not-callable", ("app",), 42)  # type: ignore[arg-type]
    assert info.value.field == "fn"


def test_metadata_is_read_only_for_handlers() -> None:
    def mutate(_e: Any, _m: Any, metadata: Any, _c: Any) -> None:
        metadata["injected"] = True

    seen: Seen = []
    telemetry.attach("mutator", ("app", "m"), mutate)
    telemetry.attach("reader", ("app", "m"), recorder(seen))
    original = {"a": 1}
    telemetry.execute(("app", "m"), {}, original)
    assert original == {"a": 1}
    assert seen[0][2] == {"a": 1}


def test_a_failing_handler_is_detached_reported_once_and_isolated(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[int] = []
    failures: Seen = []

    def broken(*_: Any) -> None:
        calls.append(1)
        raise ValueError("boom")

    telemetry.attach("broken", ("app", "e"), broken)
    telemetry.attach("healthy", ("app", "e"), lambda *a: calls.append(2))
    telemetry.attach("failures", telemetry.HANDLER_FAILURE, recorder(failures))
    caplog.set_level(logging.ERROR, logger=LOGGER_NAME)
    telemetry.execute(("app", "e"), {})
    telemetry.execute(("app", "e"), {})
    assert calls == [1, 2, 2]
    assert "broken" not in {h.id for h in telemetry.list_handlers()}
    assert len(failures) == 1
    _event, measurements, metadata, _ = failures[0]
    assert metadata["handler_id"] == "broken"
    assert metadata["event"] == ("app", "e")
    assert metadata["kind"] == "ValueError"
    assert metadata["reason"] == "boom"
    assert "monotonic_time" in measurements
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "tinkex.telemetry.handler_detached" in errors[0].getMessage()


def test_reattached_handler_with_the_same_id_survives_an_old_failure() -> None:
    entered, barrier = threading.Event(), threading.Event()

    def slow_failure(*_: Any) -> None:
        entered.set()
        barrier.wait(5)
        raise RuntimeError("late")

    telemetry.attach("h", ("app", "r"), slow_failure)
    worker = threading.Thread(target=telemetry.execute, args=(("app", "r"), {}))
    worker.start()
    assert entered.wait(5)
    telemetry.detach("h")
    replacement: Seen = []
    telemetry.attach("h", ("app", "other"), recorder(replacement))
    barrier.set()
    worker.join(5)
    assert [h.id for h in telemetry.list_handlers(("app", "other"))] == ["h"]


def test_span_emits_start_and_stop() -> None:
    seen: Seen = []
    prefix = ("app", "work")
    telemetry.attach("span", [(*prefix, "start"), (*prefix, "stop")], recorder(seen))
    with telemetry.span(prefix, {"job": 7}) as meta:
        meta["result"] = "ok"
    (start, stop) = seen
    assert start[0] == (*prefix, "start")
    assert stop[0] == (*prefix, "stop")
    assert set(start[1]) == {"monotonic_time", "system_time"}
    assert stop[1]["duration"] >= 0
    assert stop[1]["monotonic_time"] >= start[1]["monotonic_time"]
    assert start[2]["job"] == 7
    assert "result" not in start[2]
    assert stop[2]["result"] == "ok"
    assert stop[2]["job"] == 7
    assert start[2]["span_id"] == stop[2]["span_id"]


def test_span_emits_exception_and_reraises() -> None:
    seen: Seen = []
    prefix = ("app", "fail")
    telemetry.attach("span-x", [(*prefix, "exception"), (*prefix, "stop")], recorder(seen))
    with pytest.raises(KeyError), telemetry.span(prefix, {"job": 1}):
        raise KeyError("missing")
    assert len(seen) == 1
    event, measurements, metadata, _ = seen[0]
    assert event == (*prefix, "exception")
    assert metadata["kind"] == "KeyError"
    assert "missing" in metadata["reason"]
    assert isinstance(metadata["exception"], KeyError)
    assert measurements["duration"] >= 0


def test_attach_logger_logs_through_structlog() -> None:
    handler_id = telemetry.attach_logger(logging.INFO, stream=None)
    assert handler_id in {h.id for h in telemetry.list_handlers(("tinkex",))}
    stdlib = logging.getLogger(f"{LOGGER_NAME}.telemetry")
    previous = stdlib.level
    stdlib.setLevel(logging.INFO)
    try:
        with structlog.testing.capture_logs() as logs:
            telemetry.execute(
                telemetry.HTTP_REQUEST_STOP,
                {"duration": 2_500_000, "monotonic_time": 1},
                {"method": "GET", "path": "/api/v1/x", "status": 200},
            )
    finally:
        stdlib.setLevel(previous)
    assert logs == [
        {
            "event": "tinkex.http.request.stop",
            "log_level": "info",
            "method": "GET",
            "path": "/api/v1/x",
            "status": 200,
            "duration_ms": 2.5,
        }
    ]
    assert telemetry.attach_logger(logging.DEBUG, stream=None) == handler_id  # replaces
    assert [h.id for h in telemetry.list_handlers()].count(handler_id) == 1
    telemetry.detach(handler_id)


def _stop_event() -> None:
    telemetry.execute(
        telemetry.HTTP_REQUEST_STOP,
        {"duration": 2_500_000, "monotonic_time": 1},
        {"method": "GET", "path": "/api/v1/x", "status": 200},
    )


def test_attach_logger_prints_to_stderr_out_of_the_box(capsys: pytest.CaptureFixture[str]) -> None:
    """The seed's "quick console logger": a line per event with no logging configured."""
    root = logging.getLogger()
    assert not [h for h in root.handlers if type(h) is logging.StreamHandler]  # nothing set up
    handler_id = telemetry.attach_logger()
    try:
        _stop_event()
    finally:
        assert telemetry.detach(handler_id)
    err = capsys.readouterr().err
    assert "tinkex.http.request.stop" in err
    assert "duration_ms=2.5" in err
    assert "path=/api/v1/x" in err
    _stop_event()  # detached: nothing more
    assert capsys.readouterr().err == ""


def test_the_console_logger_does_not_print_twice(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An application that logs everything to stderr too still sees each event once."""
    app_handler = logging.StreamHandler()  # stderr, on the root logger
    root = logging.getLogger()
    root.addHandler(app_handler)
    monkeypatch.setattr(root, "level", logging.DEBUG)
    handler_id = telemetry.attach_logger()
    try:
        _stop_event()
    finally:
        telemetry.detach(handler_id)
        root.removeHandler(app_handler)
    assert capsys.readouterr().err.count("tinkex.http.request.stop") == 1


def test_library_logger_is_silent_by_default() -> None:
    logger = logging.getLogger(LOGGER_NAME)
    assert any(isinstance(h, logging.NullHandler) for h in logger.handlers)
    assert telemetry.QUEUE_STATE_CHANGE == ("tinkex", "queue", "state_change")
    assert telemetry.QUEUE_STATE_CHANGE in telemetry.ALL_EVENTS
