"""``tinkex sample`` against the embedded servers (null: token ids; torch: real text)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from _servers import ServerHandle

from tinkex_actors.cli import main
from tinkex_actors.errors import TokenizerError
from tinkex_actors.tokenizer import Tokenizer


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_sample_token_ids_on_null(
    capsys: pytest.CaptureFixture[str], cli_env: ServerHandle, tmp_path: Path
) -> None:
    prompt = tmp_path / "prompt.json"
    prompt.write_text("[1, 2, 3, 4]")
    status, out, err = _run(
        capsys, "sample", "--model", "tinkex/tiny-llama", "--prompt-file", str(prompt),
        "--max-tokens", "5", "--num-samples", "2", "--seed", "7", "--json",
    )  # fmt: skip
    assert status == 0, err
    data = json.loads(out)
    assert data["model"] == "tinkex/tiny-llama"
    assert data["prompt_tokens"] == 4
    assert len(data["samples"]) == 2
    for sample in data["samples"]:
        assert len(sample["tokens"]) == 5
        assert len(sample["logprobs"]) == 5
        assert sample["stop_reason"] == "length"


def test_sample_from_a_sampler_checkpoint(
    capsys: pytest.CaptureFixture[str],
    cli_env: ServerHandle,
    seeded: dict[str, str],
    tmp_path: Path,
) -> None:
    prompt = tmp_path / "prompt.json"
    prompt.write_text("[5, 6, 7]")
    status, out, err = _run(
        capsys, "sample", "--model-path", seeded["sampler"], "--prompt-file", str(prompt),
        "--max-tokens", "3", "--json",
    )  # fmt: skip
    assert status == 0, err
    data = json.loads(out)
    assert data["model"] == "tinkex/tiny-llama"  # the checkpoint's base model
    assert len(data["samples"][0]["tokens"]) == 3


def test_sample_bad_input(capsys: pytest.CaptureFixture[str], cli_env: ServerHandle) -> None:
    status, out, err = _run(capsys, "sample", "--model-path", "tinker://run/x", "--prompt", "hi")
    assert status == 2
    assert out == ""
    assert "tinker://<training_run_id>" in err
    assert err.count("\n") == 1
    status, _, err = _run(capsys, "sample", "--model", "m", "--prompt", "hi", "--temperature", "-1")
    assert status == 2
    assert "temperature" in err
    with pytest.raises(SystemExit) as info:  # argparse: exactly one model source
        main(["sample", "--model", "m", "--model-path", "tinker://r/sampler_weights/s"])
    assert info.value.code == 2


def _wait_for_published_tokenizer(timeout: float = 120.0) -> None:
    # The torch engine warms up after /healthz answers; it then publishes its model's
    # tokenizer into this process's HF cache (tests/conftest.py shares HF_HOME with it).
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            Tokenizer.get("tinkex/tiny-llama", local_only=True)
            return
        except TokenizerError:
            time.sleep(0.2)
    raise AssertionError("the torch server did not publish its tokenizer")


@pytest.mark.torch
def test_sample_text_on_torch(
    capsys: pytest.CaptureFixture[str], torch_server: ServerHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TINKER_API_KEY", torch_server.api_key)
    monkeypatch.setenv("TINKER_BASE_URL", torch_server.base_url)
    _wait_for_published_tokenizer()
    status, out, err = _run(
        capsys, "sample", "--model", "tinkex/tiny-llama", "--prompt", "The quick brown fox",
        "--max-tokens", "6", "--temperature", "0", "--json",
    )  # fmt: skip
    assert status == 0, err
    data = json.loads(out)
    assert data["prompt_tokens"] > 0
    (sample,) = data["samples"]
    assert 0 < len(sample["tokens"]) <= 6
    assert isinstance(sample["text"], str)
    # Greedy: the same text again, printed plainly this time.
    status, plain, err = _run(
        capsys, "sample", "--model", "tinkex/tiny-llama", "--prompt", "The quick brown fox",
        "--max-tokens", "6", "--temperature", "0",
    )  # fmt: skip
    assert status == 0, err
    assert plain == sample["text"] + "\n"
