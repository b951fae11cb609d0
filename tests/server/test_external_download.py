"""The official 0.38 ``tinker checkpoint download`` against the torch server: real files that load.

The CLI loads the training checkpoint into a new run (create-via-load), exports it with
``save_weights_external``, signs per-file URLs (``external_weights_urls``), resets the export's
TTL, downloads every file with plain GETs and deletes the export. The downloaded PEFT adapter,
loaded onto the tiny base model with ``peft``, must score a sequence as the server does.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from _servers import ServerHandle
from tinker import types

from ._helpers import MODEL
from ._sdk import ce_datum, rest_client, service_client

pytestmark = pytest.mark.torch

TOKENS = [5, 17, 42, 9, 33, 21, 8]
CLI_TIMEOUT = 180
CLI = (sys.executable, "-m", "tinker.cli", "-f", "json")


def test_cli_download_of_a_training_checkpoint_loads_back(
    torch_server: ServerHandle, tmp_path: Path
) -> None:
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    datum = ce_datum(TOKENS)
    with service_client(torch_server) as service:
        training = service.create_lora_training_client(base_model=MODEL, rank=4, seed=3).result()
        for _ in range(2):  # LoRA starts as a no-op: train so the adapter matters
            training.forward_backward([datum], "cross_entropy").result()
            training.optim_step(types.AdamParams(learning_rate=5e-2)).result()
        path = training.save_state("to-download").result().path
        served = training.forward([datum], "cross_entropy").result()
    ours = np.asarray(served.loss_fn_outputs[0]["logprobs"].tolist(), dtype=np.float32)

    def exports() -> set[str]:
        listed = rest_client(torch_server).list_user_checkpoints(limit=1000).result().checkpoints
        return {c.tinker_path for c in listed if c.checkpoint_type == "external"}

    before = exports()  # other tests of the shared server may keep exports of their own
    env = dict(os.environ)
    env.update(
        TINKER_API_KEY=torch_server.api_key,
        TINKER_BASE_URL=torch_server.base_url,
        TINKER_TELEMETRY="0",
    )
    done = subprocess.run(
        [*CLI, "checkpoint", "download", path, "--output", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    target = tmp_path / path.removeprefix("tinker://").replace("/", "_")
    assert sorted(p.name for p in target.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    # The CLI deleted its temporary export.
    assert exports() == before

    hf_logging.disable_progress_bar()  # tqdm's bar would leave its monitor thread running
    try:
        base = AutoModelForCausalLM.from_pretrained(MODEL, local_files_only=True)
    finally:
        hf_logging.enable_progress_bar()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PEFT notes the extra section of our adapter config
        model = peft.PeftModel.from_pretrained(base, str(target))
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([TOKENS[:-1]])).logits[0]
    theirs = torch.log_softmax(logits, -1).gather(1, torch.tensor(TOKENS[1:])[:, None])[:, 0]
    assert np.abs(ours).sum() > 0
    np.testing.assert_allclose(theirs.numpy(), ours, atol=1e-4)
