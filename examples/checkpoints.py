"""Checkpoints: save, list, download, resume.

* ``save_state(name)`` saves weights and optimizer state (``tinker://<run>/weights/<name>``);
  ``save_weights_for_sampler(name)`` saves weights for sampling
  (``tinker://<run>/sampler_weights/<name>``).
* A ``RestClient`` lists a run's checkpoints and everything the caller owns, and returns
  signed archive URLs and weights metadata.
* ``CheckpointDownload.download`` streams an archive to disk (flat memory, progress
  callback) and extracts it safely.
* ``create_training_client_from_state_with_optimizer(path)`` resumes training: the resumed
  client's next step gives exactly the loss the original client gives.

    python examples/checkpoints.py [--output DIR]

Starts the embedded server (torch engine: real PEFT adapter files); set ``TINKER_BASE_URL`` /
``TINKER_API_KEY`` (and ``EXAMPLE_BASE_MODEL``) to use another Tinker server.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from tinkex_actors import CheckpointDownload, ServiceClient, TrainingClient, types
from tinkex_actors.server.embedded import config_or_embedded

BASE_MODEL = os.environ.get("EXAMPLE_BASE_MODEL", "tinkex/tiny-llama")
TEXT = "Checkpoints let a long training run stop and start again."


def step(training: TrainingClient, datum: types.Datum) -> float:
    """One training step; returns its loss."""
    backward = training.forward_backward([datum], "cross_entropy")
    training.optim_step(types.AdamParams(learning_rate=5e-3))
    return backward.result().metrics["loss:sum"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, help="where to download (default: a temp dir)")
    args = parser.parse_args()

    with (
        config_or_embedded("torch") as config,
        ServiceClient(config) as service,
        service.create_rest_client() as rest,
        tempfile.TemporaryDirectory(prefix="tinkex-checkpoints-") as scratch,
    ):
        training = service.create_lora_training_client(BASE_MODEL, {"rank": 8, "seed": 1})
        tokens = training.get_tokenizer().encode(TEXT)
        datum = types.Datum(
            types.ModelInput.from_ints(tokens[:-1]),
            {"target_tokens": tokens[1:], "weights": [1.0] * (len(tokens) - 1)},
        )
        for _ in range(3):
            step(training, datum)

        # --- save: both kinds, at the same point of training
        state = training.save_state("after-3-steps").result().path
        saved = training.save_weights_for_sampler("after-3-steps").result()
        if saved.path is None:
            raise SystemExit("the server did not report where it saved the sampler weights")
        sampler_weights = saved.path
        print(f"saved state:           {state}")
        print(f"saved sampler weights: {sampler_weights}")

        # --- list: this run's checkpoints, and the total the caller owns (paged)
        run_id = training.model_id
        for checkpoint in rest.list_checkpoints(run_id).checkpoints:
            size = f"{checkpoint.size_bytes:,} bytes" if checkpoint.size_bytes else "?"
            print(f"  {checkpoint.checkpoint_type:8}  {checkpoint.checkpoint_id:30}  {size}")
        owned = sum(1 for _ in rest.iter_user_checkpoints(page_size=50))
        info = rest.get_weights_info_by_tinker_path(sampler_weights)
        print(f"checkpoints you own: {owned}")
        print(f"weights info: base model {info.base_model}, LoRA rank {info.lora_rank}")
        url = rest.get_checkpoint_archive_url_by_tinker_path(sampler_weights)
        print(f"signed archive URL valid until {url.expires.isoformat(timespec='seconds')}")

        # --- download: streamed to disk, extracted safely
        def progress(done: int, total: int | None) -> None:
            if total and done == total:
                print(f"  downloaded {done:,} of {total:,} bytes")

        output = args.output or Path(scratch)
        directory = CheckpointDownload.download(
            rest, sampler_weights, output_dir=output, force=True, progress=progress
        )
        for file in sorted(directory.iterdir()):
            print(f"  {file.relative_to(output)}  {file.stat().st_size:,} bytes")

        # --- resume: a new client from the saved state, optimizer included
        resumed = service.create_training_client_from_state_with_optimizer(state)
        original_loss = step(training, datum)  # the original run's 4th step
        resumed_loss = step(resumed, datum)  # the resumed run's first step
        print(f"4th step loss: original {original_loss:.6f}, resumed {resumed_loss:.6f}")
        print("resumed exactly" if original_loss == resumed_loss else "resumed: losses differ")


if __name__ == "__main__":
    main()
