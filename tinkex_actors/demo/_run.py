"""The demo job: embedded server, LoRA fine-tuning on facts, samples, checkpoint, plot."""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

from tinkex_actors import CheckpointDownload, SamplingClient, ServiceClient, types
from tinkex_actors._constants import SERVER_DEFAULT_MODEL
from tinkex_actors.demo._report import Progress, plot_losses, table
from tinkex_actors.demo._task import Fact, build_datum, load_facts
from tinkex_actors.errors import ResponseDecodeError
from tinkex_actors.server.embedded import EmbeddedServer
from tinkex_actors.tokenizer import TokenizerHandle

__all__ = ["DemoOptions", "DemoResult", "run_demo"]

#: The tiny model's end-of-text token, appended to every completion so greedy sampling stops.
EOS_TEXT = "<|end_of_text|>"
CHECKPOINT_NAME = "demo-final"
MAX_TOKENS = 16


@dataclass(frozen=True)
class DemoOptions:
    """Settings of one demo run (the command-line flags)."""

    steps: int = 30
    learning_rate: float = 5e-3
    rank: int = 32
    output: Path = Path("demo-output")
    facts: Path | None = None
    plain: bool = False


@dataclass
class DemoResult:
    """What the run produced (also written to ``summary.json``)."""

    model: str
    facts: int
    losses: list[float]
    before: list[str]
    after: list[str]
    learned: int
    tinker_path: str
    checkpoint_dir: str
    loss_curve: str | None
    timings: dict[str, float] = field(default_factory=dict)


class _Clock:
    def __init__(self) -> None:
        self.start = self.mark = time.monotonic()

    def lap(self) -> float:
        now = time.monotonic()
        elapsed, self.mark = now - self.mark, now
        return elapsed

    def total(self) -> float:
        return time.monotonic() - self.start


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is below it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _complete(
    sampler: SamplingClient, facts: Sequence[Fact], tokenizer: TokenizerHandle
) -> list[str]:
    """Greedy completions of every prompt, sampled concurrently."""
    params = types.SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0)
    futures = [
        sampler.sample(types.ModelInput.from_ints(tokenizer.encode(fact.prompt)), params)
        for fact in facts
    ]
    return [
        tokenizer.decode(future.result().sequences[0].tokens, skip_special_tokens=True)
        for future in futures
    ]


def run_demo(options: DemoOptions, out: TextIO = sys.stdout) -> DemoResult:
    """Run the demo end to end; progress goes to ``out`` (the bar to stderr)."""

    def say(text: str = "") -> None:
        out.write(text + "\n")
        out.flush()

    clock = _Clock()
    facts = load_facts(options.facts)
    output = options.output.expanduser().resolve()
    output.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    say(
        f"tinkex_actors demo: teach {SERVER_DEFAULT_MODEL} (random weights, no pre-training) "
        f"{len(facts)} made-up facts with LoRA"
    )
    say("[1/6] starting the embedded server (torch engine) ...")
    with EmbeddedServer("torch", log_path=output / "server.log") as server:
        timings["server_start"] = clock.lap()
        say(f"      healthy at {server.base_url} in {timings['server_start']:.1f} s")
        with ServiceClient(server.config()) as service:
            say(f"[2/6] creating a LoRA training client (rank {options.rank}) ...")
            training = service.create_lora_training_client(
                SERVER_DEFAULT_MODEL, types.LoraConfig(rank=options.rank, seed=0)
            )
            tokenizer = training.get_tokenizer()
            timings["training_client"] = clock.lap()
            say(
                f"      {training.model_id} in {timings['training_client']:.1f} s "
                "(the engine builds the model on first start)"
            )
            eos = tokenizer.encode(EOS_TEXT)
            data = [build_datum(fact, tokenizer, eos) for fact in facts]
            completion_tokens = sum(
                sum(datum.loss_fn_inputs["weights"].to_list()) for datum in data
            )

            say("[3/6] sampling the prompts before training (greedy) ...")
            base = service.create_sampling_client(base_model=SERVER_DEFAULT_MODEL)
            before = _complete(base, facts, tokenizer)
            timings["sample_before"] = clock.lap()

            say(
                f"[4/6] training: {options.steps} steps, full batch of {len(data)} facts, "
                f"Adam lr {options.learning_rate:g}"
            )
            losses: list[float] = []
            progress = Progress(options.steps, plain=options.plain)
            try:
                for _ in range(options.steps):
                    # Both are sent at once: the optimizer step queues behind the
                    # forward_backward on the server while we wait for its loss.
                    backward = training.forward_backward(data, "cross_entropy")
                    step = training.optim_step(
                        types.AdamParams(learning_rate=options.learning_rate)
                    )
                    loss = backward.result().metrics["loss:sum"] / completion_tokens
                    losses.append(loss)
                    progress.update(loss)
                    step.result()
            finally:
                progress.close()
            timings["training"] = clock.lap()

            say("[5/6] saving sampler weights and sampling from them ...")
            tinker_path = training.save_weights_for_sampler(CHECKPOINT_NAME).result().path
            if tinker_path is None:
                raise ResponseDecodeError(
                    "the server saved the weights without reporting their path",
                    expected="SaveWeightsForSamplerResponse with a path",
                )
            tuned = service.create_sampling_client(model_path=tinker_path)
            after = _complete(tuned, facts, tokenizer)
            timings["sample_after"] = clock.lap()
            rows = [
                (fact.prompt, b, a, a == fact.completion)
                for fact, b, a in zip(facts, before, after, strict=True)
            ]
            say(table(rows))
            learned = sum(ok for *_, ok in rows)
            say(f"      learned {learned}/{len(facts)} facts; saved as {tinker_path}")

            say("[6/6] downloading the checkpoint archive ...")
            downloads = output / "checkpoint"
            shutil.rmtree(downloads, ignore_errors=True)  # the previous run's download
            with service.create_rest_client() as rest:
                checkpoint_dir = CheckpointDownload.download(
                    rest, tinker_path, output_dir=downloads
                )
            timings["download"] = clock.lap()
        say("      stopping the server ...")
    timings["server_stop"] = clock.lap()
    png = plot_losses(
        losses,
        output / "loss_curve.png",
        f"{SERVER_DEFAULT_MODEL} + LoRA rank {options.rank}: {len(facts)} facts",
    )
    timings["total"] = clock.total()
    result = DemoResult(
        model=SERVER_DEFAULT_MODEL,
        facts=len(facts),
        losses=losses,
        before=before,
        after=after,
        learned=learned,
        tinker_path=tinker_path,
        checkpoint_dir=str(checkpoint_dir),
        loss_curve=str(png) if png else None,
        timings={name: round(value, 3) for name, value in timings.items()},
    )
    (output / "summary.json").write_text(json.dumps(asdict(result), indent=2) + "\n")
    files = ", ".join(sorted(p.name for p in checkpoint_dir.iterdir()))
    say()
    say(f"Loss curve:  {_shown(png) if png else '(needs matplotlib: pip install matplotlib)'}")
    say(f"Checkpoint:  {_shown(checkpoint_dir)}/  ({files})")
    say(f"Summary:     {_shown(output / 'summary.json')}")
    say(f"Server log:  {_shown(output / 'server.log')}")
    say(f"Done in {timings['total']:.1f} s.")
    return result
