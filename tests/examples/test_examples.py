"""Each example in examples/ runs to completion and shows what its docstring promises.

Examples run as subprocesses. Most are pointed at the session's shared servers through
``TINKER_BASE_URL`` / ``TINKER_API_KEY`` (the "any Tinker URL" path; torch where the example
is about learning, null where it is about the SDK's mechanics); ``multi_tenant`` starts its
own embedded server (the default path: it needs per-key rate limits).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from _servers import ServerHandle

from ._run import EXAMPLES, TIMEOUT, example_env, run_example

ALL_EXAMPLES = {
    "asyncio_usage",
    "checkpoints",
    "dpo",
    "multi_tenant",
    "parity",
    "quickstart",
    "rl_loop",
    "supervised_daemon",
    "supervised_loop",
    "telemetry_structlog",
}


def test_every_example_is_tested_and_listed_in_the_readme() -> None:
    scripts = {p.stem for p in EXAMPLES.glob("*.py")}
    assert scripts == ALL_EXAMPLES
    readme = (EXAMPLES / "README.md").read_text()
    for name in scripts:
        assert f"{name}.py" in readme, name


def test_readme_example_is_the_quickstart() -> None:
    """The README's code is a cut of examples/quickstart.py, which the test below runs."""
    readme = (EXAMPLES.parent / "README.md").read_text()
    (block,) = re.findall(r"## Example\n\n```python\n(.*?)```", readme, re.DOTALL)
    quickstart = {line.strip() for line in (EXAMPLES / "quickstart.py").read_text().splitlines()}
    missing = [line for line in block.splitlines() if line.strip() not in quickstart]
    assert missing == []


def _floats(pattern: str, text: str) -> list[float]:
    return [float(m) for m in re.findall(pattern, text)]


# ------------------------------------------------------------------ torch: learning
@pytest.mark.torch
def test_quickstart_learns_the_sentence(torch_server: ServerHandle, tmp_path: Path) -> None:
    out = run_example("quickstart", server=torch_server, cwd=tmp_path)
    losses = _floats(r"step \d+: loss ([\d.]+)", out)
    assert len(losses) == 20
    assert losses[-1] < losses[0] / 4
    assert "sample: " in out


@pytest.mark.torch
def test_supervised_loop_pipelined(torch_server: ServerHandle, tmp_path: Path) -> None:
    out = run_example("supervised_loop", "--epochs", "4", server=torch_server, cwd=tmp_path)
    (before,) = _floats(r"loss per token before: ([\d.]+)", out)
    (after,) = _floats(r"loss per token after: +([\d.]+)", out)
    assert after < before - 1.0
    assert len(re.findall(r"epoch \d step +\d+: loss:sum", out)) == 8  # every step reported


@pytest.mark.torch
def test_rl_loop_raises_the_reward(torch_server: ServerHandle, tmp_path: Path) -> None:
    out = run_example("rl_loop", server=torch_server, cwd=tmp_path)
    rewards = _floats(r"iteration +\d+: mean reward ([\d.]+)", out)
    assert len(rewards) == 12
    assert rewards[-1] >= 0.5
    assert rewards[-1] > rewards[0] + 0.3
    assert "(32 samples in" in out


@pytest.mark.torch
def test_checkpoints_save_list_download_resume(torch_server: ServerHandle, tmp_path: Path) -> None:
    out = run_example(
        "checkpoints", "--output", str(tmp_path / "dl"), server=torch_server, cwd=tmp_path
    )
    assert re.search(r"training\s+weights/after-3-steps", out)
    assert re.search(r"sampler\s+sampler_weights/after-3-steps", out)
    (extracted,) = (tmp_path / "dl").iterdir()
    assert {p.name for p in extracted.iterdir()} == {
        "adapter_config.json",
        "adapter_model.safetensors",
    }
    assert "resumed exactly" in out


@pytest.mark.torch
def test_parity_with_the_official_sdk(torch_server: ServerHandle, tmp_path: Path) -> None:
    out = run_example("parity", server=torch_server, cwd=tmp_path)
    assert out.count("same tokens: True") == 2
    assert "stop reasons: length / length" in out
    assert "stop reasons: stop / stop" in out
    assert "parity: OK" in out


# ------------------------------------------------------------------ null: SDK mechanics
def test_supervised_daemon_restarts_and_resumes(null_server: ServerHandle, tmp_path: Path) -> None:
    out = run_example("supervised_daemon", server=null_server, cwd=tmp_path)
    assert "[telemetry tinkex.actor.restart] training actor restarted" in out
    assert "[telemetry tinkex.actor.failed] training actor GIVEN UP" in out
    assert "stopped (done) after step 20; 1 rebuild(s)" in out
    # The rebuilt client (train:1) repeats steps 11..14 with exactly the first client's losses.
    first = dict(re.findall(r"step +(\d+): loss:sum ([\d.]+) +model \S+:train:0", out))
    second = dict(re.findall(r"step +(\d+): loss:sum ([\d.]+) +model \S+:train:1", out))
    assert [first[s] for s in ("11", "12", "13")] == [second[s] for s in ("11", "12", "13")]
    assert "20" in second


def test_supervised_daemon_stops_cleanly_on_sigterm(
    null_server: ServerHandle, tmp_path: Path
) -> None:
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "supervised_daemon.py"), "--steps", "0"],
        env=example_env(null_server),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines: list[str] = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("step   3: loss"):
                process.send_signal(signal.SIGTERM)
                break
        rest, _ = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, "".join(lines) + rest
    assert re.search(r"stopped \(signal\) after step \d+; 0 rebuild\(s\); final checkpoint", rest)


def test_telemetry_to_structlog_json(null_server: ServerHandle, tmp_path: Path) -> None:
    out = run_example("telemetry_structlog", server=null_server, cwd=tmp_path)
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    events = {r["event"] for r in records}
    assert {"tinkex.http.request.start", "tinkex.http.request.stop"} <= events
    assert {"example.session_started", "example.work_done"} <= events
    stops = [r for r in records if r["event"] == "tinkex.http.request.stop"]
    assert all(r["logger"] == "tinkex_actors.telemetry" and r["level"] == "info" for r in stops)
    assert any(r["path"] == "/api/v1/forward_backward" for r in stops)
    assert null_server.api_key not in out
    assert re.search(r"POST /api/v1/forward_backward +n=  3", out)


def test_asyncio_awaits_actor_futures(null_server: ServerHandle, tmp_path: Path) -> None:
    out = run_example("asyncio_usage", server=null_server, cwd=tmp_path)
    assert len(re.findall(r"step \d: losses [\d.]+, [\d.]+", out)) == 5
    assert "32 samples, " in out
    (ticks,) = _floats(r"the ticker ran (\d+) times", out)
    assert ticks >= 2


def test_multi_tenant_throttles_only_the_noisy_tenant(tmp_path: Path) -> None:
    out = run_example(
        "multi_tenant", "--samples", "100", "--noisy-samples", "20", server=None, cwd=tmp_path
    )
    rows = {
        (name, phase): (int(done), int(refused))
        for name, phase, done, refused in re.findall(
            r"^(\S+) +(alone|together) +(\d+) +[\d.]+ +[\d.]+ +(\d+)$", out, re.MULTILINE
        )
    }
    assert rows[("noisy", "together")][0] == 20  # every throttled sample still completed
    assert rows[("noisy", "together")][1] > 0  # ... after 429s
    for name in ("quiet-a", "quiet-b"):
        assert rows[(name, "alone")] == (100, 0)
        assert rows[(name, "together")] == (100, 0)
    assert "quiet tenants kept" in out
