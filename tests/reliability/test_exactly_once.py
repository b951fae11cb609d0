"""Exactly-once training under faults: 200 steps through the fault proxy equal a clean run.

The reference run trains 200 steps (forward_backward + optim_step) straight against the torch
server. The faulted run trains the same 200 steps through the fault proxy, which faults about
20% of every request (submissions, polls, heartbeats, telemetry, downloads) with every fault
kind. What must hold:

* the client side: every call returns (bounded waits), no training call fails, and the losses
  equal the reference's step by step, bit for bit;
* the server side: every (model, seq_id) the server was sent got exactly one future however
  often it arrived, the seq_ids run 1..401 without a gap, the server applied exactly 200
  AdamW steps (the checkpoint's optimizer state says so), and the checkpoint files are
  byte-identical to the reference's;
* the session heartbeat kept succeeding between its faults.

A second test makes the SDK give up (one transport retry, faults repeated) and checks that
every give-up is a typed error and that the client moves on as the official SDK does: the
given-up call's seq_id stays used, the server applied it once if it got it and skips it after
its gap timeout if not, and no later call fails or stalls longer than that.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from _servers import ServerHandle, session_server

from tinkex_actors import Config, ServiceClient, telemetry
from tinkex_actors.errors import (
    APIConnectionError,
    APITimeoutError,
    InternalServerError,
    RateLimitError,
    TinkexError,
)

from ._faults import Exchange, Fault, FaultKind, RandomFaults, Rule, Script
from ._proxy import FaultProxy
from ._training import (
    ADAM,
    LORA,
    MODEL,
    WAIT,
    adam_steps,
    batch,
    checkpoint_files,
    sequenced,
    tensors,
    train,
)
from .conftest import Heartbeats, MakeProxy

pytestmark = [pytest.mark.torch, pytest.mark.slow]

STEPS = 200
FAULT_RATE = 0.2
SEED = 7
HEARTBEAT = 0.25


@dataclass(frozen=True)
class Reference:
    """The fault-free run."""

    losses: list[float]
    files: dict[str, bytes]


@pytest.fixture(scope="module")
def reference(torch_server: ServerHandle, tmp_path_factory: pytest.TempPathFactory) -> Reference:
    config = Config(api_key=torch_server.api_key, base_url=torch_server.base_url)
    with ServiceClient(config) as service:
        training = service.create_lora_training_client(MODEL, LORA, timeout=2 * WAIT)
        losses = train(training, range(STEPS))
        path = training.save_state("reference").result(WAIT).path
        rest = service.create_rest_client()
        try:
            files = checkpoint_files(rest, path, tmp_path_factory.mktemp("reference"))
        finally:
            rest.close()
    return Reference(losses, files)


def _server_futures(proxy: FaultProxy, model_id: str) -> dict[int, set[str]]:
    """seq_id -> the request_ids the server answered for it (2xx answers only)."""
    futures: dict[int, set[str]] = defaultdict(set)
    for path in ("/forward_backward", "/optim_step", "/save_weights"):
        for relayed in proxy.relayed_to(path):
            model, seq = sequenced(relayed.request)
            answer = relayed.answer_json()
            if model == model_id and isinstance(answer, dict) and "request_id" in answer:
                futures[seq].add(answer["request_id"])
    return futures


def test_200_steps_under_20_percent_faults_apply_exactly_once(
    torch_server: ServerHandle,
    reference: Reference,
    make_proxy: MakeProxy,
    fast_sleep: Callable[[float], None],
    heartbeats: Callable[[str], Heartbeats],
    tmp_path: Path,
) -> None:
    proxy = make_proxy(torch_server.port, RandomFaults(SEED, FAULT_RATE))
    config = Config(api_key=torch_server.api_key, base_url=proxy.url, heartbeat_interval=HEARTBEAT)
    download_errors: list[TinkexError] = []
    retries: list[str] = []

    def on_retry(event: Any, measurements: Any, metadata: Any, _: Any) -> None:
        if metadata["tenant_id"] == config.tenant_id:
            retries.append(metadata["path"])

    telemetry.attach("reliability-retries", [telemetry.HTTP_REQUEST_RETRY], on_retry)
    started = time.monotonic()
    try:
        with ServiceClient(config, sleep=fast_sleep) as service:
            training = service.create_lora_training_client(MODEL, LORA, timeout=2 * WAIT)
            losses = train(training, range(STEPS))
            path = training.save_state("faulted").result(WAIT).path
            rest = service.create_rest_client()
            try:
                files = checkpoint_files(rest, path, tmp_path, on_error=download_errors.append)
            finally:
                rest.close()
            model_id = training.model_id
    finally:
        telemetry.detach("reliability-retries")
    elapsed = time.monotonic() - started

    # The faults really happened, every kind of them, on every kind of request.
    kinds = proxy.fault_kinds()
    assert set(kinds) == {kind.value for kind in FaultKind}, kinds
    seen = sum(proxy.seen.values())
    # The policy decided each exchange but the polls inside a try_again stretch.
    decided = seen - (proxy.try_again_answers - kinds[FaultKind.TRY_AGAIN.value])
    rate = len(proxy.faults) / decided
    assert 0.15 < rate < 0.25, (len(proxy.faults), decided)
    for path_suffix in ("/forward_backward", "/optim_step", "/retrieve_future", "_heartbeat"):
        assert proxy.faults_on(path_suffix), f"no fault injected on {path_suffix}"

    # Client side: the same trajectory, bit for bit.
    assert losses == reference.losses
    assert tensors(files) == tensors(reference.files)
    assert set(files) == set(reference.files)
    assert files["adapter_config.json"] == reference.files["adapter_config.json"]
    assert all(isinstance(e, TinkexError) for e in download_errors)

    # Server side: each seq_id got one future however often it arrived, none is missing, and
    # the optimizer stepped exactly STEPS times.
    futures = _server_futures(proxy, model_id)
    assert sorted(futures) == list(range(1, 2 * STEPS + 2))
    assert all(len(ids) == 1 for ids in futures.values()), {
        seq: ids for seq, ids in futures.items() if len(ids) != 1
    }
    arrivals = [sequenced(r.request) for p in ("/forward_backward", "/optim_step") for r in
                proxy.relayed_to(p)]  # fmt: skip
    repeated = len(arrivals) - len(set(arrivals))
    assert repeated > 0, "no request reached the server twice: dedupe was not exercised"
    assert adam_steps(files["optimizer.safetensors"]) == {float(STEPS)}
    log = torch_server.log_tail(10**7)
    assert not [line for line in log.splitlines() if "seq_gap" in line and model_id in line]

    # The session heartbeat failed now and then and kept coming back.
    beats = heartbeats(config.tenant_id)
    assert beats.failed > 0
    assert beats.ok_after_failure > 0
    print(
        f"\nexactly-once: {STEPS} steps in {elapsed:.1f} s (reference run included in setup); "
        f"{seen} requests, {len(proxy.faults)} of {decided} decisions faulted ({rate:.0%}), "
        f"{proxy.try_again_answers} try_again answers; faults {dict(sorted(kinds.items()))}; "
        f"by label {dict(sorted(proxy.fault_counts().items()))}; transport retries "
        f"{len(retries)}; requests the server saw again {repeated}; heartbeats ok {beats.ok} "
        f"failed {beats.failed}; download failures {len(download_errors)}"
    )


def _on_forward(ordinals: set[int]) -> Callable[[Exchange], bool]:
    def match(exchange: Exchange) -> bool:
        return exchange.path.endswith("/forward_backward") and exchange.ordinal in ordinals

    return match


#: (fault, the typed error the SDK gives up with when it repeats on both attempts)
GIVE_UPS: list[tuple[Fault, type[TinkexError]]] = [
    (Fault(FaultKind.DROP_REQUEST), APIConnectionError),
    (Fault(FaultKind.DROP_RESPONSE), APIConnectionError),
    (Fault(FaultKind.STATUS, 503), InternalServerError),
    (Fault(FaultKind.STATUS, 502, retry_after="0"), InternalServerError),
    (Fault(FaultKind.STATUS, 429), RateLimitError),
    (Fault(FaultKind.STATUS_AFTER, 500), InternalServerError),
    (Fault(FaultKind.DELAY, delay=1.5), APITimeoutError),
]


@pytest.fixture(scope="module")
def gap_server() -> Iterator[ServerHandle]:
    """A null server that skips a seq_id that never arrived after 1 s (not 30)."""
    with session_server("null", extra_args=("--seq-gap-timeout=1",)) as handle:
        yield handle


def test_give_ups_are_typed_and_the_client_moves_on(
    gap_server: ServerHandle, make_proxy: MakeProxy, fast_sleep: Callable[[float], None]
) -> None:
    """A call the SDK gave up on keeps its seq_id used, as the official SDK does: the next
    call takes the next one. The server applied a given-up request it received (once, however
    often it arrived) and skips the id of one it never received after its gap timeout; nothing
    fails with a conflict and nothing waits longer than that."""
    # forward_backward submissions 1, 3, 5, ... each meet one fault kind twice: with one
    # transport retry allowed, the SDK gives up on each of them.
    rules = [
        Rule(_on_forward({2 * i + 1}), fault, times=2) for i, (fault, _) in enumerate(GIVE_UPS)
    ]
    script = Script(*rules)
    proxy = make_proxy(gap_server.port, script)
    config = Config(api_key=gap_server.api_key, base_url=proxy.url, max_retries=1, timeout=1.0)
    errors: list[TinkexError] = []
    steps = 2 * len(GIVE_UPS)  # forward_backward ordinals 1..steps reach every rule
    with ServiceClient(config, sleep=fast_sleep) as service:
        training = service.create_lora_training_client(MODEL, LORA, timeout=2 * WAIT)
        model_id = training.model_id
        # forward() leaves the weights as they are; it takes forward_backward ordinal 0.
        training.forward(batch(0), "cross_entropy").result(WAIT)
        for step in range(steps):
            forward = training.forward_backward(batch(step), "cross_entropy")
            stepped = training.optim_step(ADAM)  # pipelined, as a training loop does
            try:
                forward.result(WAIT)
            except TinkexError as exc:
                errors.append(exc)  # the user moves on (re-sending would apply it twice)
            stepped.result(WAIT)  # never fails: no conflict, no stall past the gap timeout

    assert script.exhausted
    gave_up = [type(e) for e in errors]
    assert gave_up == [expected for _, expected in GIVE_UPS], gave_up
    shown = " ".join(f"{e} {e!r} {vars(e)!r}" for e in errors)
    assert gap_server.api_key not in shown
    # Each seq_id the server received got one future however often it arrived; the ids run
    # 1 (the forward) .. 2 * steps + 1 with no id used twice.
    futures = _server_futures(proxy, model_id)
    assert all(len(ids) == 1 for ids in futures.values()), futures
    sent = {sequenced(r.request)[1] for p in ("/forward_backward", "/optim_step")
            for r in proxy.relayed_to(p) if sequenced(r.request)[0] == model_id}  # fmt: skip
    assert max(sent) == 2 * steps + 1
    conflicts = [r for p in ("/forward_backward", "/optim_step") for r in proxy.relayed_to(p)
                 if r.response and r.response.status == 409]  # fmt: skip
    assert conflicts == []
    # The ids that never reached the server were skipped after the gap timeout, and only those.
    never = set(range(1, 2 * steps + 2)) - sent
    skipped = [line for line in gap_server.log_tail(10**7).splitlines()
               if "seq_gap_skipped" in line and model_id in line]  # fmt: skip
    assert len(skipped) == len(never), (skipped, never)


def test_a_give_up_with_unknown_outcome_does_not_break_the_next_call(
    torch_server: ServerHandle,
    reference: Reference,
    make_proxy: MakeProxy,
    fast_sleep: Callable[[float], None],
) -> None:
    # Step 1's forward_backward reaches the server twice but both answers are lost: the SDK
    # gives up not knowing that the server took its seq_id. The user then goes on with the
    # optim_step instead of re-sending, which must not fail on that seq_id.
    script = Script(Rule(_on_forward({1}), Fault(FaultKind.DROP_RESPONSE), times=2))
    proxy = make_proxy(torch_server.port, script)
    config = Config(api_key=torch_server.api_key, base_url=proxy.url, max_retries=1)
    with ServiceClient(config, sleep=fast_sleep) as service:
        training = service.create_lora_training_client(MODEL, LORA, timeout=2 * WAIT)
        first = train(training, range(1))
        with pytest.raises(APIConnectionError):
            training.forward_backward(batch(1), "cross_entropy").result(WAIT)
        training.optim_step(ADAM).result(WAIT)
        later = train(training, range(2, 6))
    assert script.exhausted
    # The lost forward_backward was applied exactly once: the run is the reference run.
    assert first + later == reference.losses[:1] + reference.losses[2:6]
    conflicts = [
        r for r in proxy.relayed_to("/optim_step") if r.response and r.response.status == 409
    ]
    assert conflicts == []  # the optim_step took the next seq_id: nothing to probe
