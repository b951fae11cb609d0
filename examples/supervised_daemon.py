"""A long-running training daemon under supervision: a crash is restarted, training goes on.

Two layers keep it alive:

1. The SDK's supervisor. Each ServiceClient supervises its clients one-for-one: an unexpected
   exception in a client's actor crashes that actor only. The call it was serving fails with
   ``ActorCrashedError``; the supervisor restarts the actor on the same server model, with
   ``seq_id``s continuing, and reports ``telemetry.ACTOR_RESTARTED``. The daemon retries the
   call on the same client.
2. The daemon's own. More than ``max_restarts`` crashes within ``restart_period`` seconds and
   the supervisor gives the client up (``ChildFailedError``, ``telemetry.ACTOR_FAILED``). The
   daemon then builds a new training client from its last checkpoint
   (``create_training_client_from_state_with_optimizer``) and continues from that step.

The crashes are real: a transport ``Backend`` wrapping the default one raises an unexpected
exception (a stand-in for a bug) inside the SDK's actor when armed, before the request leaves,
so retrying the call is exact. (In general an ``ActorCrashedError`` leaves the call's outcome
on the server unknown; a daemon that must be exact then resumes from its checkpoint.) The
daemon arms it once at step 6 (one restart) and four times in a row at step 14 (the client is
given up and rebuilt from the step-10 checkpoint). SIGINT / SIGTERM stop it after the current
step with a final checkpoint.

    python examples/supervised_daemon.py [--steps 20]     # --steps 0: until SIGINT/SIGTERM

Starts the embedded server (null engine: the mechanics, not the learning); set
``TINKER_BASE_URL`` / ``TINKER_API_KEY`` (and ``EXAMPLE_BASE_MODEL``) to use another server.
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from tinkex_actors import ActorFuture, Config, ServiceClient, TrainingClient, telemetry, types
from tinkex_actors.errors import ActorCrashedError, ChildFailedError
from tinkex_actors.server.embedded import config_or_embedded
from tinkex_actors.transport import RawResponse, RawStream, RequestsBackend, Timeouts

BASE_MODEL = os.environ.get("EXAMPLE_BASE_MODEL", "tinkex/tiny-llama")
CHECKPOINT_EVERY = 5
MAX_RESTARTS, RESTART_PERIOD = 3, 60.0
#: step -> crashes to inject into that step's forward_backward: one, then a storm.
CHAOS = {6: 1, 14: MAX_RESTARTS + 1}
T = TypeVar("T")
_print_lock = threading.Lock()


def say(text: str) -> None:
    """print() from several threads (the telemetry handler runs in the supervisor's)."""
    with _print_lock:
        print(text, flush=True)


class InjectedBugError(Exception):
    """What the chaos backend raises: not a TinkexError, so the actor crashes."""


class ChaosBackend:
    """The default transport backend, plus crashes on demand for forward_backward."""

    def __init__(self, config: Config) -> None:
        self.inner = RequestsBackend(config)
        self.armed = 0
        self.lock = threading.Lock()

    def arm(self, times: int) -> None:
        with self.lock:
            self.armed += times

    def disarm(self) -> None:
        with self.lock:
            self.armed = 0

    def send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        timeouts: Timeouts,
    ) -> RawResponse:
        if url.endswith("/forward_backward"):
            with self.lock:
                fire, self.armed = self.armed > 0, max(0, self.armed - 1)
            if fire:
                raise InjectedBugError("injected crash while sending forward_backward")
        return self.inner.send(method, url, headers, body, timeouts)

    def open(
        self, method: str, url: str, headers: Mapping[str, str], timeouts: Timeouts
    ) -> RawStream:
        return self.inner.open(method, url, headers, timeouts)

    def close(self) -> None:
        self.inner.close()


def on_supervision(event: Any, measurements: Any, metadata: Any, config: Any) -> None:
    """Telemetry handler: runs in the supervisor's thread, so it only prints."""
    what = "restarted" if event == telemetry.ACTOR_RESTARTED else "GIVEN UP"
    say(
        f"  [telemetry {'.'.join(event)}] {metadata['client']} actor {what} "
        f"(restarts in window: {metadata['restarts']}, cause: {metadata['kind']})"
    )


def call(what: str, method: Callable[..., ActorFuture[T]], *args: Any) -> T:
    """Run one client call, retrying it on the restarted actor after a crash."""
    for attempt in itertools.count(1):
        try:
            return method(*args).result(timeout=60)
        except ChildFailedError:
            raise  # the client was given up: the caller rebuilds it
        except ActorCrashedError as exc:
            say(f"  {what} crashed (attempt {attempt}: {exc.__cause__!r}); retrying")
    raise AssertionError("unreachable")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="0: run until SIGINT/SIGTERM")
    args = parser.parse_args()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    telemetry.attach(
        "daemon-supervision", [telemetry.ACTOR_RESTARTED, telemetry.ACTOR_FAILED], on_supervision
    )
    try:
        with config_or_embedded("null") as config:
            chaos = ChaosBackend(config)
            service = ServiceClient(
                config, backend=chaos, max_restarts=MAX_RESTARTS, restart_period=RESTART_PERIOD
            )
            with service:
                run(service, chaos, args.steps, stop)
    finally:
        telemetry.detach("daemon-supervision")


def run(service: ServiceClient, chaos: ChaosBackend, steps: int, stop: threading.Event) -> None:
    training: TrainingClient = service.create_lora_training_client(BASE_MODEL, {"rank": 8})
    batch = [
        types.Datum(
            types.ModelInput.from_ints([5, 6, 7, 8, 9, 10]),
            {"target_tokens": [6, 7, 8, 9, 10, 11], "weights": [1.0] * 6},
        )
    ]
    adam = types.AdamParams(learning_rate=1e-3)
    checkpoint = (0, training.save_state("step-0").result().path)
    done, rebuilds, injected = 0, 0, set()  # done: steps completed
    while not stop.is_set() and (steps == 0 or done < steps):
        step = done + 1
        if step in CHAOS and step not in injected:
            injected.add(step)
            say(f"step {step:3d}: injecting {CHAOS[step]} crash(es) into forward_backward")
            chaos.arm(CHAOS[step])
        try:
            # Not pipelined on purpose: optim_step goes out only after forward_backward
            # succeeded, so a retried forward_backward never leaves a step half applied.
            output = call("forward_backward", training.forward_backward, batch, "cross_entropy")
            call("optim_step", training.optim_step, adam)
        except ChildFailedError:
            chaos.disarm()
            rebuilds += 1
            done, path = checkpoint
            say(f"step {step:3d}: client given up; rebuilding from {path}")
            training.close()
            training = service.create_training_client_from_state_with_optimizer(path)
            continue
        done = step
        loss = output.metrics["loss:sum"]
        say(f"step {step:3d}: loss:sum {loss:.4f}  model {training.model_id}")
        if step % CHECKPOINT_EVERY == 0:
            checkpoint = (step, training.save_state(f"step-{step}").result().path)
            say(f"step {step:3d}: checkpoint {checkpoint[1]}")
    final = training.save_state(f"final-{done}").result().path
    reason = "signal" if stop.is_set() else "done"
    say(f"stopped ({reason}) after step {done}; {rebuilds} rebuild(s); final checkpoint {final}")


if __name__ == "__main__":
    main()
