"""``tinker_cookbook.weights.download`` of a training checkpoint: the export is age-encrypted to
a key made for the download, fetched from signed URLs, decrypted and deleted."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import tinker
from tinker import types
from tinker_cookbook import weights

from .conftest import MODEL, Cookbook

FILES = ["adapter_config.json", "adapter_model.safetensors"]


def test_weights_download_decrypts_the_export(cookbook: Cookbook, tmp_path: Path) -> None:
    service = tinker.ServiceClient(base_url=cookbook.base_url)
    try:
        training = service.create_lora_training_client(base_model=MODEL, rank=4).result()
        datum = types.Datum(
            model_input=types.ModelInput.from_ints([5, 17, 42, 9]),
            loss_fn_inputs={"target_tokens": [17, 42, 9, 33], "weights": [1.0] * 4},
        )
        training.forward_backward([datum], "cross_entropy").result()
        training.optim_step(types.AdamParams(learning_rate=1e-2)).result()
        state = training.save_state("for-download").result().path
        plain = training.save_weights_external("plain").result().path
    finally:
        service.close("success").result()

    out = tmp_path / "adapter"
    assert weights.download(tinker_path=state, output_dir=str(out), base_url=cookbook.base_url)
    assert sorted(p.name for p in out.iterdir()) == FILES

    # The decrypted files are the adapter itself: byte for byte the unencrypted export.
    rest = tinker.RestClient(base_url=cookbook.base_url)
    urls = rest.get_external_weights_urls(plain).result().urls
    for name in FILES:
        with urllib.request.urlopen(urls[name], timeout=30) as reply:
            assert (out / name).read_bytes() == reply.read()
    # The temporary export was deleted; the plain one is still there.
    exports = [
        c.tinker_path
        for c in rest.list_user_checkpoints(limit=1000).result().checkpoints
        if c.checkpoint_type == "external"
    ]
    assert plain in exports
    assert not [p for p in exports if p.endswith("/external_weights/download")]
