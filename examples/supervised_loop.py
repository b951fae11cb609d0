"""Supervised fine-tuning with a pipelined loop: forward_backward and optim_step in flight.

Every TrainingClient call returns an ``ActorFuture`` at once and is sent to the server in
call order (consecutive ``seq_id``s), so a loop can submit step N+1 before step N's result
is back: the server never idles waiting for the client. This loop keeps up to ``DEPTH``
steps in flight and reads each step's loss only when it has to (``--depth 1`` waits for every
result before sending the next step, for comparison).

Task: next-token prediction on a few sentences, in mini-batches, for a few epochs; the mean
loss per token is measured with ``forward`` (no gradients) before and after.

    python examples/supervised_loop.py [--epochs 8] [--depth 2]

Starts the embedded server (torch engine); set ``TINKER_BASE_URL`` / ``TINKER_API_KEY`` (and
``EXAMPLE_BASE_MODEL``) to train on another Tinker server.
"""

from __future__ import annotations

import argparse
import collections
import os
import time

from tinkex_actors import ActorFuture, ServiceClient, TrainingClient, types
from tinkex_actors.server.embedded import config_or_embedded

BASE_MODEL = os.environ.get("EXAMPLE_BASE_MODEL", "tinkex/tiny-llama")
SENTENCES = [
    "The lighthouse keeper counted ships every night.",
    "A quiet river runs through the old stone town.",
    "Bakers in the valley rise before the sun.",
    "The library keeps maps of islands nobody has visited.",
    "Every spring the orchard fills with white blossoms.",
    "Children fly kites on the windy hill after school.",
    "The clock in the square has not moved in years.",
    "Snow covers the mountain pass from November to March.",
]
BATCH = 4


def sentence_datum(text: str, training: TrainingClient) -> types.Datum:
    """Next-token prediction over the whole sentence."""
    tokens = training.get_tokenizer().encode(text)
    return types.Datum(
        types.ModelInput.from_ints(tokens[:-1]),
        {"target_tokens": tokens[1:], "weights": [1.0] * (len(tokens) - 1)},
    )


def mean_loss(training: TrainingClient, data: list[types.Datum]) -> float:
    """Loss per target token, without touching the weights (``forward``)."""
    output = training.forward(data, "cross_entropy").result()
    tokens = sum(len(d.loss_fn_inputs["target_tokens"].to_list()) for d in data)
    return output.metrics["loss:sum"] / tokens


def report(epoch: int, step: int, future: ActorFuture[types.ForwardBackwardOutput]) -> None:
    """Print a step's summed loss (blocks until that step's result is back)."""
    print(f"epoch {epoch} step {step:2d}: loss:sum {future.result().metrics['loss:sum']:7.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--depth", type=int, default=2, help="steps in flight (1: no pipelining)")
    parser.add_argument("--lr", type=float, default=5e-3)
    args = parser.parse_args()

    with config_or_embedded("torch") as config, ServiceClient(config) as service:
        training = service.create_lora_training_client(BASE_MODEL, {"rank": 32, "seed": 0})
        data = [sentence_datum(text, training) for text in SENTENCES]
        batches = [data[i : i + BATCH] for i in range(0, len(data), BATCH)]
        before = mean_loss(training, data)
        print(f"loss per token before: {before:.3f}")

        adam = types.AdamParams(learning_rate=args.lr)
        in_flight: collections.deque[tuple[int, int, ActorFuture[types.ForwardBackwardOutput]]]
        in_flight = collections.deque()
        started, step = time.monotonic(), 0
        for epoch in range(args.epochs):
            for batch in batches:
                # Both calls return at once; the optimizer step reaches the server while the
                # forward_backward still runs there.
                in_flight.append((epoch, step, training.forward_backward(batch, "cross_entropy")))
                training.optim_step(adam)
                step += 1
                while len(in_flight) >= args.depth:  # read the oldest result only now
                    report(*in_flight.popleft())
        while in_flight:
            report(*in_flight.popleft())
        elapsed = time.monotonic() - started

        after = mean_loss(training, data)  # queued behind the last optim_step
        print(f"loss per token after:  {after:.3f} ({step} steps, depth {args.depth})")
        print(f"{step / elapsed:.1f} steps/s")
        if not after < before:
            raise SystemExit("the loss did not go down")


if __name__ == "__main__":
    main()
