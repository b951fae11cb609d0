"""The shared sampler registry: immutable snapshots read without a lock.

``SamplingClient.sample()`` runs in the caller's thread and must not serialize callers: it
reads its sampler's :class:`SamplerSnapshot` with one ``dict.get`` on a table that is never
mutated in place. Writers (a SamplingActor publishing or withdrawing a sampler) take a lock,
copy the table, change the copy and swap the reference (copy-on-write); a reader sees either
the old table or the new one, never a half-written one. Reads are a handful of nanoseconds;
writes happen once per sampling client.
"""

from __future__ import annotations

import itertools
import threading
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from tinkex_actors.actors._sampler_state import SamplerState

__all__ = ["SamplerRegistry", "SamplerSnapshot", "samplers"]


@attrs.frozen(slots=True)
class SamplerSnapshot:
    """What a sample needs to know about its sampler (immutable).

    Attributes:
        sampler_id: the sampling session id on the server.
        base_model: the sampler's base model.
        model_path: the ``tinker://`` weights it samples, when made from a path.
        state: the sampler's mutable runtime state (seq counter, pending futures, tenant).
    """

    sampler_id: str
    base_model: str | None
    model_path: str | None
    state: SamplerState


class SamplerRegistry:
    """``key -> SamplerSnapshot``; lock-free reads, copy-on-write writes. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._table: dict[int, SamplerSnapshot] = {}
        self._keys = itertools.count(1)

    def new_key(self) -> int:
        """A fresh key for a new sampling client."""
        return next(self._keys)

    def get(self, key: int) -> SamplerSnapshot | None:
        """The snapshot published under ``key`` (no lock)."""
        return self._table.get(key)

    def publish(self, key: int, snapshot: SamplerSnapshot) -> None:
        """Publish (or replace) the snapshot under ``key``."""
        with self._lock:
            table = dict(self._table)
            table[key] = snapshot
            self._table = table

    def withdraw(self, key: int) -> None:
        """Remove ``key`` (later samples through it raise ClientClosedError)."""
        with self._lock:
            if key not in self._table:
                return
            table = dict(self._table)
            del table[key]
            self._table = table

    def __len__(self) -> int:
        return len(self._table)

    def forget_after_fork(self) -> None:
        """In a forked child: withdraw every snapshot (the parent's samplers; their lanes'
        threads did not survive the fork). Keys keep counting, so a client inherited from the
        parent never finds a new client's snapshot under its key. Called by ``actors._fork``."""
        self._lock = threading.Lock()
        self._table = {}


#: The process-wide registry.
samplers = SamplerRegistry()
