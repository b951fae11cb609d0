"""examples/dpo.py: DPO through forward_backward_custom on the tiny model (torch engine)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from _servers import ServerHandle

from ._run import run_example


@pytest.mark.torch
def test_dpo_lowers_the_dpo_loss(torch_server: ServerHandle, tmp_path: Path) -> None:
    out = run_example("dpo", server=torch_server, cwd=tmp_path)
    steps = re.findall(r"step (\d+): dpo loss ([\d.]+) accuracy ([\d.]+) margin ([+-][\d.]+)", out)
    assert [int(s[0]) for s in steps] == list(range(8)), out
    losses = [float(s[1]) for s in steps]
    # Step 0: the policy is the reference, no margin, the loss is log 2.
    assert math.isclose(losses[0], math.log(2), abs_tol=1e-3), out
    assert abs(float(steps[0][3])) < 1e-3, out
    assert losses[-1] < 0.25 * losses[0], out
    assert float(steps[-1][2]) == 1.0, out  # every chosen completion now preferred
    assert float(steps[-1][3]) > 1.0, out
