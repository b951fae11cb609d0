"""The ``make demo`` job (``python -m tinkex_actors.demo --help``).

:func:`run_demo` runs it from code: the embedded server, LoRA fine-tuning of
``tinkex/tiny-llama`` on the shipped facts (``facts.tsv``), greedy samples before and after,
a sampler checkpoint and its downloaded archive, and the loss curve PNG.
"""

from __future__ import annotations

from tinkex_actors.demo._run import DemoOptions, DemoResult, run_demo
from tinkex_actors.demo._task import Fact, load_facts

__all__ = ["DemoOptions", "DemoResult", "Fact", "load_facts", "run_demo"]
