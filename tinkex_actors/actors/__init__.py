"""The actor runtime: ServiceActor, TrainingActor, SamplingActor, poller, supervisor, registry.

Private package: the public API is the facades re-exported from :mod:`tinkex_actors`
(``ServiceClient``, ``TrainingClient``, ``SamplingClient``). See ``docs/architecture.md``.

Modules:

* ``_base``: calls, actor handles (re-pointed on restart), the let-it-crash child base.
* ``_service``: the ServiceActor (starts and supervises clients; restart intensity).
* ``_training``: the TrainingActor (serialized submission, seq_ids) and its state.
* ``_sampling``: the SamplingActor (lifecycle) and the sample task (the hot path).
* ``_poller``: the retrieve_future loop.
* ``_queue_state``: queue-state events and throttled warnings.
* ``_registry``: the lock-free sampler registry (copy-on-write snapshots).
* ``_tenant``: per-Config transport, worker pool and rate limiter (reference counted).
* ``_runtime``: what one ServiceClient's tree shares.
* ``_session``: bootstrap, heartbeat thread, session finish.
* ``_pool``: the bounded daemon worker pool.
* ``_validate``: input checks run in the caller's thread.
"""

from __future__ import annotations

from tinkex_actors.actors._service import CHILD_FAILED, CHILD_RESTARTED

__all__ = ["CHILD_FAILED", "CHILD_RESTARTED"]
