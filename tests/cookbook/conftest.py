"""Fixtures of the tinker-cookbook tests: the cookbook's loops driving the official SDK at the
shared torch server, offline.

* ``TINKER_API_KEY`` / ``TINKER_BASE_URL`` point the SDK (and every client the cookbook makes)
  at the server; each config also passes ``base_url``.
* No network: tokenizers come from the session's Hugging Face cache, where the torch server
  publishes ``tinkex/tiny-llama`` (``HF_HUB_OFFLINE=1`` is set for the whole suite), and the
  model pricing the loops fetch once per process is read from a local ``models.json`` through
  the cookbook's own loader (:func:`_offline_pricing`).
* The cookbook's logging setup replaces the root logger's handlers (``ml_log``); the
  ``cookbook`` fixture puts pytest's back afterwards and closes the cookbook's file handler.
* tqdm's stall monitor (a thread that outlives every bar) is switched off, so the loops'
  progress bars leave no thread behind.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import tqdm
from _servers import ServerHandle
from tinker_cookbook.utils import cost_estimation

MODEL = "tinkex/tiny-llama"
RENDERER = "role_colon"
#: Prices for the tiny model, so the loops' cost metrics run through real code.
PRICING = [
    {
        "tinker_id": MODEL,
        "prefill": "$0.10",
        "cached_prefill": "$0.05",
        "sample": "$0.20",
        "train": "$0.30",
    }
]


@dataclass(frozen=True)
class Cookbook:
    """Where a cookbook run talks to and writes."""

    server: ServerHandle
    base_url: str
    log_root: Path


def _offline_pricing(folder: Path) -> None:
    """Load the cookbook's per-process pricing cache from a local file (its real loader)."""
    path = folder / "models.json"
    path.write_text(json.dumps(PRICING))
    entries = cost_estimation.load_model_pricing(url=path.as_uri())
    assert entries is not None, "the cookbook could not read the local pricing file"


@pytest.fixture(scope="session")
def _pricing(tmp_path_factory: pytest.TempPathFactory) -> None:
    _offline_pricing(tmp_path_factory.mktemp("cookbook-pricing"))


@pytest.fixture
def cookbook(
    torch_server: ServerHandle,
    _pricing: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Cookbook]:
    """The environment of one cookbook run; restores the logging setup afterwards."""
    monkeypatch.setenv("TINKER_API_KEY", torch_server.api_key)
    monkeypatch.setenv("TINKER_BASE_URL", torch_server.base_url)
    monkeypatch.setattr(tqdm.tqdm, "monitor_interval", 0)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield Cookbook(torch_server, torch_server.base_url, tmp_path)
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
