"""Pipelining: optim_step is submitted before forward_backward's result exists (by ordering)."""

from __future__ import annotations

import orjson
from _servers import ServerHandle

from tinkex_actors import Config, ServiceClient, types

from ._backends import Recorder, request_id_of
from .conftest import BASE_MODEL, datum


def test_optim_step_is_sent_before_forward_backward_completes(
    slow_server: ServerHandle,
) -> None:
    config = Config(api_key=slow_server.api_key, base_url=slow_server.base_url)
    recorder = Recorder(config)
    with ServiceClient(config, backend=recorder) as service:
        training = service.create_lora_training_client(BASE_MODEL, timeout=30)
        batch = [datum(list(range(1, 10)))]
        steps = []
        for _ in range(5):
            fb = training.forward_backward(batch, "cross_entropy")
            step = training.optim_step(types.AdamParams(learning_rate=1e-3))
            steps.append((fb, step))
        for fb, step in steps:
            assert fb.result(timeout=60).loss_fn_outputs
            assert step.result(timeout=60) is not None
        events = recorder.snapshot()
    fb_reply = next(
        i
        for i, e in enumerate(events)
        if e.kind == "reply" and e.path.endswith("/forward_backward")
    )
    optim_reply = next(
        i for i, e in enumerate(events) if e.kind == "reply" and e.path.endswith("/optim_step")
    )
    fb_id = request_id_of(events[fb_reply])
    # The first forward_backward's result: the protobuf answer to a poll of its request id.
    polls = {
        i: orjson.loads(e.body or b"{}")["request_id"]
        for i, e in enumerate(events)
        if e.kind == "send" and e.path.endswith("/retrieve_future")
    }
    result_at = next(
        i
        for i, e in enumerate(events)
        if e.kind == "reply"
        and e.path.endswith("/retrieve_future")
        and "protobuf" in e.headers.get("content-type", "")
    )
    assert fb_id in polls.values()
    # optim_step reached the server (and was accepted) before the forward_backward it follows
    # produced its result: submission never waits for results.
    assert fb_reply < optim_reply < result_at
