"""Training-run helpers of the reliability scenarios: data, loops, checkpoint files.

A run is deterministic: the LoRA seed is fixed, every step's batch comes from a generator
seeded with the step number, and the torch engine computes bit-identically for the same
inputs. So two runs agree bit for bit exactly when each one applied every step once.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import orjson
import safetensors.numpy
import zstandard

from tinkex_actors import CheckpointDownload, RestClient, TrainingClient, types
from tinkex_actors.errors import TinkexError
from tinkex_actors.types import Datum, ModelInput
from tinkex_actors.wire import decode_forward_backward_request

from ._http import Message

__all__ = [
    "ADAM",
    "LORA",
    "MODEL",
    "WAIT",
    "adam_steps",
    "batch",
    "checkpoint_files",
    "sequenced",
    "tensors",
    "train",
]

T = TypeVar("T")

MODEL = "tinkex/tiny-llama"
LORA = types.LoraConfig(rank=2, seed=20_240_607)
ADAM = types.AdamParams(learning_rate=2e-3)
#: The bound on every wait in a scenario: a call that takes longer counts as hung.
WAIT = 60.0
_VOCAB = 2048
_TOKENS = 10


def batch(step: int) -> list[Datum]:
    """Step ``step``'s batch: two random next-token sequences (seeded by ``step``)."""
    rng = random.Random(step)
    data = []
    for _ in range(2):
        tokens = [rng.randrange(3, _VOCAB) for _ in range(_TOKENS + 1)]
        data.append(
            Datum(
                ModelInput.from_ints(tokens[:-1]),
                {"target_tokens": tokens[1:], "weights": [1.0] * _TOKENS},
            )
        )
    return data


def train(
    training: TrainingClient,
    steps: range,
    *,
    on_error: Callable[[TinkexError], None] | None = None,
) -> list[float]:
    """``forward_backward`` + ``optim_step`` for each step; returns each step's loss.

    Without ``on_error`` the two calls are pipelined (optim_step submitted before the
    forward_backward's result is in) and any failure raises. With it, a failed call is
    reported to ``on_error`` and sent again with the same arguments, as a user would; the
    optim_step then waits for its forward_backward, so it never runs on missing gradients.
    """
    losses = []
    for step in steps:
        data = batch(step)
        if on_error is None:
            output = training.forward_backward(data, "cross_entropy")
            stepped = training.optim_step(ADAM)
            losses.append(output.result(WAIT).metrics["loss:sum"])
            stepped.result(WAIT)
            continue

        def forward(data: list[Datum] = data) -> types.ForwardBackwardOutput:
            return training.forward_backward(data, "cross_entropy").result(WAIT)

        losses.append(_until_ok(forward, on_error).metrics["loss:sum"])
        _until_ok(lambda: training.optim_step(ADAM).result(WAIT), on_error)
    return losses


def _until_ok(call: Callable[[], T], on_error: Callable[[TinkexError], None]) -> T:
    for _ in range(50):
        try:
            return call()
        except TinkexError as exc:
            on_error(exc)
    raise AssertionError("a call kept failing after 50 attempts")


def checkpoint_files(
    rest: RestClient,
    path: str,
    output_dir: Path,
    *,
    on_error: Callable[[TinkexError], None] | None = None,
) -> dict[str, bytes]:
    """Download checkpoint ``path`` and return its files by name.

    With ``on_error``, a failed download (a typed error) is reported and tried again.
    """
    for _ in range(50):
        try:
            target = CheckpointDownload.download(rest, path, output_dir=output_dir, force=True)
        except TinkexError as exc:
            if on_error is None:
                raise
            on_error(exc)
            continue
        files = {item.name: item.read_bytes() for item in sorted(target.iterdir())}
        shutil.rmtree(target)
        return files
    raise AssertionError(f"{path} could not be downloaded in 50 attempts")


def tensors(files: dict[str, bytes]) -> dict[str, dict[str, bytes]]:
    """Every tensor of a checkpoint's ``.safetensors`` files as raw bytes, by file and name.

    Compare checkpoints with this, not with the files' bytes: safetensors writes its metadata
    header in no fixed key order, so equal checkpoints can differ byte-wise.
    """
    out: dict[str, dict[str, bytes]] = {}
    for name, data in files.items():
        if name.endswith(".safetensors"):
            loaded = safetensors.numpy.load(data)
            out[name] = {k: v.dtype.str.encode() + v.tobytes() for k, v in loaded.items()}
    return out


def adam_steps(optimizer_file: bytes) -> set[float]:
    """The AdamW step counts recorded in an ``optimizer.safetensors`` (one per parameter)."""
    tensors = safetensors.numpy.load(optimizer_file)
    return {float(v.reshape(-1)[0]) for k, v in tensors.items() if k.endswith(".step")}


def sequenced(request: Message) -> tuple[str, int]:
    """``(model_id, seq_id)`` of a relayed forward_backward / optim_step / save request."""
    body = request.decoded
    if (request.header("content-encoding") or "").lower() == "zstd":
        body = zstandard.ZstdDecompressor().decompress(body, max_output_size=1 << 26)
    if "protobuf" in (request.header("content-type") or ""):
        decoded, _ = decode_forward_backward_request(body)
        return decoded.model_id, int(decoded.seq_id or 0)
    data = orjson.loads(body)
    return str(data["model_id"]), int(data["seq_id"])
