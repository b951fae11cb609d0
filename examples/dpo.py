"""Direct Preference Optimization with ``forward_backward_custom``: a loss the server has not
got, computed here on torch tensors.

Each preference pair is a prompt with a chosen and a rejected completion, as two datums whose
``weights`` mark the completion tokens. The frozen reference is the model before training:
one ``forward`` pass gives each completion's reference log-probability, which rides along in
the datum as an extra ``loss_fn_inputs`` key (``ref_logprob``); extra keys reach the loss
function but are never sent. The DPO loss per pair is
``-log sigmoid(beta * ((chosen - ref_chosen) - (rejected - ref_rejected)))``. At step 0 the
policy is the reference, so the loss starts at log 2 = 0.693 and falls as the margin grows.

    python examples/dpo.py [--steps 8] [--beta 0.5]

Starts the embedded server (torch engine); set ``TINKER_BASE_URL`` / ``TINKER_API_KEY`` (and
``EXAMPLE_BASE_MODEL``) to use another Tinker server. Needs PyTorch on the client (the
``custom-loss`` extra).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

import torch

from tinkex_actors import ServiceClient, types
from tinkex_actors.server.embedded import config_or_embedded
from tinkex_actors.tokenizer import TokenizerHandle

BASE_MODEL = os.environ.get("EXAMPLE_BASE_MODEL", "tinkex/tiny-llama")
#: (prompt, chosen completion, rejected completion)
PAIRS = [
    ("The sky on a clear day is", " blue", " green"),
    ("Two plus two equals", " four", " five"),
    ("Water freezes at zero degrees", " Celsius", " Kelvin"),
    ("The opposite of hot is", " cold", " loud"),
]


def completion_datum(prompt: str, completion: str, tokenizer: TokenizerHandle) -> types.Datum:
    """Next-token datum of prompt + completion, weights 1 on the completion tokens only."""
    head = tokenizer.encode(prompt)
    tokens = head + tokenizer.encode(completion)
    weights = [0.0] * (len(head) - 1) + [1.0] * (len(tokens) - len(head))
    return types.Datum(
        types.ModelInput.from_ints(tokens[:-1]),
        {"target_tokens": tokens[1:], "weights": weights},
    )


def with_reference(datum: types.Datum, ref_logprob: float) -> types.Datum:
    """The datum plus its completion's reference log-probability (client-side only)."""
    ref = types.TensorData.from_list([ref_logprob], "float32")
    return types.Datum(datum.model_input, {**datum.loss_fn_inputs, "ref_logprob": ref})


def completion_logprob(datum: types.Datum, logprobs: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor(datum.loss_fn_inputs["weights"].to_list())
    return (weights * logprobs).sum()


DpoLoss = Callable[[list[types.Datum], list[torch.Tensor]], tuple[torch.Tensor, dict[str, float]]]


def make_dpo_loss(beta: float) -> DpoLoss:
    """The DPO loss over datums laid out as chosen, rejected, chosen, rejected, ..."""

    def dpo_loss(
        data: list[types.Datum], logprobs: list[torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        margins = []
        for i in range(0, len(data), 2):
            chosen, rejected = data[i], data[i + 1]
            ref_chosen = chosen.loss_fn_inputs["ref_logprob"].to_list()[0]
            ref_rejected = rejected.loss_fn_inputs["ref_logprob"].to_list()[0]
            chosen_gain = completion_logprob(chosen, logprobs[i]) - ref_chosen
            rejected_gain = completion_logprob(rejected, logprobs[i + 1]) - ref_rejected
            margins.append(beta * (chosen_gain - rejected_gain))
        margin = torch.stack(margins)
        loss = -torch.nn.functional.logsigmoid(margin).mean()
        metrics = {
            "dpo_loss": float(loss.detach()),
            "accuracy": float((margin > 0).float().mean()),
            "margin": float(margin.detach().mean()),
        }
        return loss, metrics

    return dpo_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--beta", type=float, default=0.5)
    parser.add_argument("--lr", type=float, default=5e-3)
    args = parser.parse_args()

    with config_or_embedded("torch") as config, ServiceClient(config) as service:
        training = service.create_lora_training_client(BASE_MODEL, {"rank": 8, "seed": 0})
        tokenizer = training.get_tokenizer()
        plain = [
            completion_datum(prompt, completion, tokenizer)
            for prompt, chosen, rejected in PAIRS
            for completion in (chosen, rejected)
        ]
        # The reference: the model before any update (LoRA starts as the identity).
        reference = training.forward(plain, "cross_entropy").result()
        data = [
            with_reference(d, float(completion_logprob(d, torch.tensor(o["logprobs"].to_list()))))
            for d, o in zip(plain, reference.loss_fn_outputs, strict=True)
        ]
        dpo_loss = make_dpo_loss(args.beta)
        adam = types.AdamParams(learning_rate=args.lr)
        for step in range(args.steps):
            backward = training.forward_backward_custom(data, dpo_loss)  # an ActorFuture
            training.optim_step(adam)  # applies after both passes of the custom call
            metrics = backward.result().metrics
            print(
                f"step {step}: dpo loss {metrics['dpo_loss']:.4f} "
                f"accuracy {metrics['accuracy']:.2f} margin {metrics['margin']:+.4f}"
            )


if __name__ == "__main__":
    main()
