"""What a forked child forgets of its parent's clients.

``os.fork()`` (``multiprocessing``'s ``fork`` start method, ``ProcessPoolExecutor`` on Linux)
copies the parent's memory but none of its threads: the parent's tenants, connection pools,
worker lanes and sampler snapshots arrive in the child without the threads that serve them,
and a lock held by a parent thread at the moment of the fork stays held forever. A client
built on them would queue work that no thread ever runs.

So, right after a fork, the child drops them all (the registries start empty; the parent's
objects are left to the garbage collector, never closed: closing would finish the parent's
sessions). Clients the child creates or restores build fresh ones. A
:class:`~tinkex_actors.SamplingClient` inherited through the fork notices on its next sample
(its snapshot is gone) and restores itself as a clone, like an unpickled one (see
``tinkex_actors._sampler_handles``). Other inherited clients (ServiceClient, TrainingClient)
stay the parent's: use them only there.

The hook is installed when this module is imported (POSIX only; elsewhere there is no fork).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import pykka

from tinkex_actors.actors._key_limits import key_limiters
from tinkex_actors.actors._registry import samplers
from tinkex_actors.actors._tenant import tenants
from tinkex_actors.transport import shared_transports

__all__ = ["generation", "on_fork"]

_hooks: list[Callable[[], None]] = []
_hooks_lock = threading.Lock()
_generation = [0]


def generation() -> int:
    """How many forks lie between the process that started and this one (0 in the parent)."""
    return _generation[0]


def on_fork(hook: Callable[[], None]) -> None:
    """Also run ``hook()`` in every forked child, after the registries were reset."""
    with _hooks_lock:
        _hooks.append(hook)


def _after_fork_in_child() -> None:
    _generation[0] += 1
    tenants.forget_after_fork()
    shared_transports.forget_after_fork()
    key_limiters.forget_after_fork()
    samplers.forget_after_fork()
    _forget_pykka_actors()
    for hook in _hooks:
        hook()


def _forget_pykka_actors() -> None:
    # pykka's registry lists the parent's actors (none has a thread here) under an RLock an
    # actor thread of the parent may have held at the fork: a child starting its own actors
    # would wait on it forever. pykka has no fork hook of its own; its registry is two class
    # attributes (checked, so another pykka version is left alone rather than broken).
    registry = pykka.ActorRegistry
    if isinstance(getattr(registry, "_actor_refs", None), list) and hasattr(
        registry, "_actor_refs_lock"
    ):
        registry._actor_refs_lock = threading.RLock()
        registry._actor_refs = []


_register = getattr(os, "register_at_fork", None)
if _register is not None:
    _register(after_in_child=_after_fork_in_child)
