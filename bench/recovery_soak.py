"""The recovery soak: a training and sampling daemon while its server restarts under it.

A daemon trains a LoRA model on an embedded null server for ``--steps`` steps (forward_backward
+ optim_step, pipelined), saves its state every ``--checkpoint-every`` steps (and sampler
weights, sampled from a second sampling client), and draws ``--samples`` samples from the base
model every step. Meanwhile a chaos thread restarts the server ``--restarts`` times, spread
over the run:

* ``kill``: SIGKILL, same data directory: live models are lost, checkpoints and the session
  stay;
* ``wipe``: SIGKILL and an empty data directory: the session, models, checkpoints and sampling
  sessions are all gone;
* ``graceful``: SIGTERM, same data directory: live models are saved and come back.

With ``--recovery on`` the ServiceClient gets ``RecoveryPolicy()``: the daemon catches
``ModelLostError``, calls ``TrainingClient.resume()`` and goes on from the restored step
(``Restored.optim_steps``). It passes when it finished every step, every base-model sample
completed, every call returned within its bound, and its model equals a run without restarts:
the loss of every step, the logprobs of a probe batch and the final checkpoint's tensors.

With ``--recovery off`` (``RecoveryPolicy.off()``) it passes when every call that met lost
state raised the typed error (``ModelLostError``, ``SamplerLostError``, ``SessionLostError``)
within its bound and nothing hung.

::

    make soak-recovery                                  # 5 minutes (300 s, 600 steps)
    .venv/bin/python bench/recovery_soak.py --seconds 30 --steps 60     # the test's size
    .venv/bin/python bench/recovery_soak.py --recovery off

Prints a table and, with ``--json PATH``, writes the report as JSON. Exit status 0 when it
passed, 1 when it did not.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import safetensors.numpy

from tinkex_actors import (
    CheckpointDownload,
    Config,
    RecoveryPolicy,
    SamplingClient,
    ServiceClient,
    TrainingClient,
    telemetry,
    types,
)
from tinkex_actors.errors import (
    ModelLostError,
    SamplerLostError,
    SessionLostError,
    StateLostError,
    TinkexError,
)
from tinkex_actors.server.embedded import EmbeddedServer

T = TypeVar("T")

MODEL = "tinkex/tiny-llama"
LORA = types.LoraConfig(rank=2, seed=20_240_607)
ADAM = types.AdamParams(learning_rate=2e-3)
#: The bound on every wait: a call that takes longer counts as hung.
WAIT = 60.0
PROMPT = types.ModelInput.from_ints([11, 12, 13, 14, 15, 16])
PARAMS = types.SamplingParams(max_tokens=8, temperature=0.8, seed=1)
#: Times a step is tried before the daemon gives up on it (transient errors only).
STEP_TRIES = 20
#: Back-off sleeps of the SDK are capped here: retries then span seconds, not minutes.
MAX_SLEEP = 0.5
_VOCAB = 2048


def batch(step: int) -> list[types.Datum]:
    """Step ``step``'s batch (seeded by the step, so every run sees the same data)."""
    rng = np.random.default_rng(step)
    data = []
    for _ in range(2):
        tokens = [int(t) for t in rng.integers(3, _VOCAB, size=11)]
        data.append(
            types.Datum(
                types.ModelInput.from_ints(tokens[:-1]),
                {"target_tokens": tokens[1:], "weights": [1.0] * 10},
            )
        )
    return data


PROBE = batch(10**6)


@dataclass
class Report:
    """What one run measured (times in seconds)."""

    recovery: str
    steps: int
    seconds: float = 0.0
    finished_steps: int = 0
    executions: int = 0
    restarts: list[dict[str, Any]] = field(default_factory=list)
    restores: list[dict[str, Any]] = field(default_factory=list)
    recovery_events: dict[str, int] = field(default_factory=dict)
    samples_ok: int = 0
    samples_failed: dict[str, int] = field(default_factory=dict)
    path_samplers: int = 0
    path_samplers_lost: int = 0
    step_retries: dict[str, int] = field(default_factory=dict)
    typed_failures: dict[str, int] = field(default_factory=dict)
    longest_call: float = 0.0
    losses_equal: bool = False
    logprobs_equal: bool = False
    tensors_equal: bool = False
    errors: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Every criterion of the mode held."""
        if self.errors or self.longest_call >= WAIT or len(self.restarts) == 0:
            return False
        if self.recovery == "off":
            return bool(self.typed_failures)
        return (
            self.finished_steps == self.steps
            and not self.samples_failed
            and self.losses_equal
            and self.logprobs_equal
            and self.tensors_equal
        )

    def to_json(self) -> dict[str, Any]:
        """The report with its verdict."""
        data = asdict(self)
        data["passed"] = self.passed
        return data

    def table(self) -> str:
        """A human-readable summary."""
        restarts = ", ".join(
            f"{r['kind']} at {r['at']:.1f} s ({r['took']:.1f} s)" for r in self.restarts
        )
        equal = f"{self.losses_equal} / {self.logprobs_equal} / {self.tensors_equal}"
        samples = f"{self.samples_ok} / {json.dumps(self.samples_failed)}"
        path_samplers = f"{self.path_samplers} / {self.path_samplers_lost}"
        rows = [
            ("recovery", self.recovery),
            ("duration", f"{self.seconds:.1f} s"),
            ("steps finished / asked", f"{self.finished_steps} / {self.steps}"),
            ("step executions (with re-done steps)", f"{self.executions}"),
            ("restarts", restarts or "none"),
            ("model restores (from -> steps)", "; ".join(
                f"{r['checkpoint'] or 'creation'} -> {r['optim_steps']}" for r in self.restores
            ) or "none"),
            ("recovery events", json.dumps(self.recovery_events, sort_keys=True)),
            ("base-model samples ok / failed", samples),
            ("path samplers made / lost with their weights", path_samplers),
            ("steps tried again (error)", json.dumps(self.step_retries, sort_keys=True)),
            ("typed failures (recovery off)", json.dumps(self.typed_failures, sort_keys=True)),
            ("longest call", f"{self.longest_call:.2f} s (bound {WAIT:g} s)"),
            ("losses / probe logprobs / tensors equal", equal),
            ("errors", "; ".join(self.errors) or "none"),
            ("passed", str(self.passed)),
        ]  # fmt: skip
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name.ljust(width)}  {value}" for name, value in rows)


class Timed:
    """Waits on futures with the run's bound, remembering the longest wait."""

    def __init__(self, report: Report) -> None:
        self.report = report
        self.lock = threading.Lock()

    def result(self, future: Any) -> Any:
        """``future.result(WAIT)``; a hang (TinkexTimeoutError) is recorded as an error."""
        started = time.monotonic()
        try:
            return future.result(WAIT)
        finally:
            took = time.monotonic() - started
            with self.lock:
                self.report.longest_call = max(self.report.longest_call, took)


# ---------------------------------------------------------------------------- the chaos thread
class Chaos(threading.Thread):
    """Restarts the server when the daemon's progress reaches each threshold."""

    def __init__(
        self,
        server: EmbeddedServer,
        kinds: Sequence[str],
        at_seconds: Sequence[float],
        report: Report,
        started: float,
    ) -> None:
        super().__init__(name="recovery-soak-chaos", daemon=True)
        self.server = server
        self.kinds = list(kinds)
        self.at = list(at_seconds)
        self.report = report
        self.started = started
        self.stop = threading.Event()

    def run(self) -> None:
        for kind, at in zip(self.kinds, self.at, strict=True):
            if self.stop.wait(max(0.0, self.started + at - time.monotonic())):
                return
            began = time.monotonic()
            try:
                if kind == "kill":
                    self.server.restart(graceful=False)
                elif kind == "wipe":
                    self.server.restart(keep_state=False, graceful=False)
                else:
                    self.server.restart()
            except TinkexError as exc:
                self.report.errors.append(f"restart {kind} failed: {exc}")
                return
            self.report.restarts.append(
                {"kind": kind, "at": began - self.started, "took": time.monotonic() - began}
            )


# ---------------------------------------------------------------------------- the daemon
def _recovery_counter(report: Report) -> Callable[..., None]:
    def on_event(event: Any, measurements: Any, metadata: Any, config: Any) -> None:
        name = ".".join(event[2:])
        report.recovery_events[name] = report.recovery_events.get(name, 0) + 1
        if name == "model.restored":
            report.restores.append(
                {"checkpoint": metadata["checkpoint"], "optim_steps": metadata["optim_steps"]}
            )

    return on_event


def run_reference(config: Config, steps: int, workdir: Path) -> dict[str, Any]:
    """The same training without restarts: losses, probe logprobs, final tensors."""
    with ServiceClient(config) as service:
        training = service.create_lora_training_client(MODEL, LORA, timeout=WAIT)
        losses = []
        for step in range(steps):
            out = training.forward_backward(batch(step), "cross_entropy")
            stepped = training.optim_step(ADAM)
            losses.append(out.result(WAIT).metrics["loss:sum"])
            stepped.result(WAIT)
        probe = _logprobs(training.forward(PROBE, "cross_entropy").result(WAIT))
        path = training.save_state("reference-final").result(WAIT).path
        tensors = _tensors(service, path, workdir / "reference")
    return {"losses": losses, "probe": probe, "tensors": tensors}


def _logprobs(output: types.ForwardBackwardOutput) -> list[list[float]]:
    return [list(item["logprobs"].to_list()) for item in output.loss_fn_outputs]


def _tensors(service: ServiceClient, path: str, folder: Path) -> dict[str, bytes]:
    with service.create_rest_client() as rest:
        target = CheckpointDownload.download(rest, path, output_dir=folder, force=True)
    out: dict[str, bytes] = {}
    for item in sorted(target.glob("*.safetensors")):
        for name, value in safetensors.numpy.load(item.read_bytes()).items():
            out[f"{item.name}:{name}"] = value.dtype.str.encode() + value.tobytes()
    shutil.rmtree(target)
    return out


class Daemon:
    """The job: ``steps`` training steps with checkpoints and samples, surviving restarts."""

    def __init__(self, service: ServiceClient, report: Report, args: argparse.Namespace) -> None:
        self.service = service
        self.report = report
        self.args = args
        self.timed = Timed(report)
        self.losses: dict[int, float] = {}
        self.training: TrainingClient | None = None
        self.sampler: SamplingClient | None = None
        self.path_sampler: SamplingClient | None = None
        self.retries: Counter[str] = Counter()
        self.sample_failures: Counter[str] = Counter()

    def _until_ok(self, what: str, fn: Callable[[], T]) -> T:
        # Creating clients: a call that meets a session being replaced fails once; try again.
        for _ in range(STEP_TRIES):
            try:
                return fn()
            except TinkexError as exc:
                self.retries[f"{what}:{type(exc).__name__}"] += 1
                time.sleep(0.2)
        raise RuntimeError(f"{what} kept failing")

    def run(self) -> None:
        """Train every step (re-doing what a restore rewound), sampling along the way."""
        args = self.args
        self.training = self._until_ok(
            "create_training",
            lambda: self.service.create_lora_training_client(MODEL, LORA, timeout=WAIT),
        )
        self.sampler = self._until_ok(
            "create_sampler",
            lambda: self.service.create_sampling_client(base_model=MODEL, timeout=WAIT),
        )
        pace = args.seconds / args.steps
        started = time.monotonic()
        step = 0
        highest = 0
        tries = 0
        while step < args.steps:
            if step >= highest:  # a first run of this step: keep the pace
                time.sleep(max(0.0, started + step * pace - time.monotonic()))
            try:
                self._step(step)
            except ModelLostError as exc:
                self.retries["ModelLostError"] += 1
                if not exc.restoring:
                    raise
                restored = self.training.resume(timeout=WAIT)
                step = restored.optim_steps if restored is not None else step
                continue
            except TinkexError as exc:
                # Not a loss: a request the server failed while stopping, or retries that ran
                # out while it was down. The model did not take the step: do it again.
                self.retries[type(exc).__name__] += 1
                tries += 1
                if tries > STEP_TRIES:
                    raise
                time.sleep(0.1)
                continue
            tries = 0
            self.report.executions += 1
            step += 1
            highest = max(highest, step)
            if step % args.checkpoint_every == 0:
                self._checkpoint(step)
        self.report.finished_steps = step

    def _step(self, step: int) -> None:
        training = self.training
        assert training is not None
        out = training.forward_backward(batch(step), "cross_entropy")
        stepped = training.optim_step(ADAM)
        samples = self._samples()
        loss = self.timed.result(out).metrics["loss:sum"]
        self.timed.result(stepped)
        self.losses[step] = loss
        self._collect(samples)

    def _samples(self) -> list[tuple[str, Any]]:
        futures: list[tuple[str, Any]] = []
        assert self.sampler is not None
        for _ in range(self.args.samples):
            futures.append(("base", self.sampler.sample(PROMPT, PARAMS)))
        if self.path_sampler is not None:
            try:
                futures.append(("path", self.path_sampler.sample(PROMPT, PARAMS)))
            except SamplerLostError:
                self._path_sampler_lost()
        return futures

    def _collect(self, futures: list[tuple[str, Any]]) -> None:
        for kind, future in futures:
            try:
                self.timed.result(future)
                if kind == "base":
                    self.report.samples_ok += 1
            except SamplerLostError:
                if kind == "base":
                    self.sample_failures["SamplerLostError"] += 1
                else:
                    self._path_sampler_lost()
            except TinkexError as exc:
                self.sample_failures[f"{kind}:{type(exc).__name__}"] += 1

    def _path_sampler_lost(self) -> None:
        # Its weights went with a wiped server: expected; the next checkpoint makes a new one.
        if self.path_sampler is not None:
            self.path_sampler.close()
            self.path_sampler = None
            self.report.path_samplers_lost += 1

    def _checkpoint(self, step: int) -> None:
        training = self.training
        assert training is not None
        try:
            self.timed.result(training.save_state(f"step-{step:05d}"))
            saved = self.timed.result(training.save_weights_for_sampler(f"sampler-{step:05d}"))
            if self.path_sampler is not None:
                self.path_sampler.close()
            self.path_sampler = self.service.create_sampling_client(
                model_path=str(saved.path), timeout=WAIT
            )
            self.report.path_samplers += 1
        except TinkexError as exc:
            # A restart in the middle: the next step meets the loss (or the next checkpoint
            # saves again); nothing to undo here.
            self.retries[f"checkpoint:{type(exc).__name__}"] += 1

    def verify(self, reference: dict[str, Any], workdir: Path) -> None:
        """Compare with the run without restarts."""
        training = self.training
        assert training is not None
        report = self.report
        report.losses_equal = [self.losses.get(s) for s in range(self.args.steps)] == reference[
            "losses"
        ]
        probe = _logprobs(self.timed.result(training.forward(PROBE, "cross_entropy")))
        report.logprobs_equal = probe == reference["probe"]
        path = self.timed.result(training.save_state("final")).path
        report.tensors_equal = (
            _tensors(self.service, path, workdir / "final") == reference["tensors"]
        )


# ---------------------------------------------------------------------------- recovery off
def run_without_recovery(service: ServiceClient, report: Report, chaos: Chaos) -> None:
    """Train and sample through the restarts, then check that every failure was typed and
    bounded, and that the dead clients keep failing fast with their typed errors."""
    timed = Timed(report)
    failures: Counter[str] = Counter()
    other: Counter[str] = Counter()
    training = service.create_lora_training_client(MODEL, LORA, timeout=WAIT)
    sampler = service.create_sampling_client(base_model=MODEL, timeout=WAIT)
    training_alive = sampler_alive = True
    step = 0
    while chaos.is_alive() and (training_alive or sampler_alive):
        if training_alive:
            try:
                out = training.forward_backward(batch(step), "cross_entropy")
                timed.result(training.optim_step(ADAM))
                timed.result(out)
                report.executions += 1
                step += 1
            except StateLostError as exc:
                failures[type(exc).__name__] += 1
                training_alive = False
            except TinkexError as exc:
                other[type(exc).__name__] += 1  # the server was down: not lost state
        if sampler_alive:
            try:
                timed.result(sampler.sample(PROMPT, PARAMS))
                report.samples_ok += 1
            except StateLostError as exc:
                failures[type(exc).__name__] += 1
                sampler_alive = False
            except TinkexError as exc:
                other[type(exc).__name__] += 1
        time.sleep(0.05)
    chaos.join(WAIT)
    for name, call in (
        ("training", lambda: timed.result(training.forward_backward(batch(0), "cross_entropy"))),
        ("sampling", lambda: timed.result(sampler.sample(PROMPT, PARAMS))),
        ("new client", lambda: service.create_sampling_client(base_model=MODEL, timeout=WAIT)),
    ):
        try:
            call()
            report.errors.append(f"{name}: a call succeeded on lost state")
        except StateLostError as exc:
            failures[f"after:{type(exc).__name__}"] += 1
        except TinkexError as exc:
            report.errors.append(f"{name}: untyped failure {type(exc).__name__}: {exc}")
    report.typed_failures = dict(failures)
    report.step_retries = dict(other)
    expected = {
        f"after:{cls.__name__}" for cls in (ModelLostError, SamplerLostError, SessionLostError)
    }
    if not expected <= set(failures):
        report.errors.append(f"missing typed failures: {sorted(expected - set(failures))}")


# ---------------------------------------------------------------------------- main
def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=300.0, help="pace of the run")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--checkpoint-every", type=int, default=10)
    parser.add_argument("--samples", type=int, default=4, help="base-model samples per step")
    parser.add_argument("--restarts", default="kill,wipe,graceful,wipe")
    parser.add_argument("--recovery", choices=("on", "off"), default="on")
    parser.add_argument("--simulate-ms", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one soak; returns the exit status."""
    args = _parse(argv)
    kinds = [k for k in args.restarts.split(",") if k]
    if not set(kinds) <= {"kill", "wipe", "graceful"}:
        raise SystemExit(f"--restarts: unknown kinds in {args.restarts!r}")
    report = Report(recovery=args.recovery, steps=args.steps)
    telemetry.attach("recovery-soak", list(telemetry.RECOVERY_EVENTS), _recovery_counter(report))
    workdir = Path(tempfile.mkdtemp(prefix="tinkex-recovery-soak-"))
    server = EmbeddedServer(
        "null",
        extra_args=(f"--simulate-ms={args.simulate_ms}", "--poll-hold-seconds=2"),
    )
    try:
        server.start()
        config = server.config().with_(heartbeat_interval=0.5)
        reference = run_reference(config, args.steps, workdir) if args.recovery == "on" else {}
        policy = RecoveryPolicy() if args.recovery == "on" else RecoveryPolicy.off()
        started = time.monotonic()
        spacing = args.seconds / (len(kinds) + 1)
        chaos = Chaos(
            server, kinds, [spacing * (i + 1) for i in range(len(kinds))], report, started
        )
        with ServiceClient(
            config, recovery=policy, sleep=lambda s: time.sleep(min(s, MAX_SLEEP))
        ) as service:
            chaos.start()
            try:
                if args.recovery == "on":
                    daemon = Daemon(service, report, args)
                    daemon.run()
                    chaos.join(WAIT)  # every restart happened before the verdict
                    daemon.verify(reference, workdir)
                    report.samples_failed = dict(daemon.sample_failures)
                    report.step_retries = dict(daemon.retries)
                else:
                    run_without_recovery(service, report, chaos)
            except (TinkexError, RuntimeError, AssertionError) as exc:
                report.errors.append(f"{type(exc).__name__}: {exc}")
            finally:
                chaos.stop.set()
                chaos.join(WAIT)
        report.seconds = time.monotonic() - started
        if len(report.restarts) < len(kinds):
            report.errors.append(f"only {len(report.restarts)} of {len(kinds)} restarts happened")
    finally:
        telemetry.detach("recovery-soak")
        server.close()
        shutil.rmtree(workdir, ignore_errors=True)
    print(report.table())
    if args.json is not None:
        args.json.write_text(json.dumps(report.to_json(), indent=2))
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
