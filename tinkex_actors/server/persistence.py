"""Live models across a graceful restart: saved at shutdown, restored on first use.

On a graceful stop (SIGTERM, ``EmbeddedServer.stop``, the parent of an embedded server gone,
the ASGI lifespan ending), after the scheduler has let running engine work finish and failed
what was still queued, :func:`save_live_models` writes every live adapter's weights and
optimizer state into a directory under ``checkpoints/`` (atomically, like a checkpoint) and
records it in ``live_models`` with the highest ``seq_id`` its queue had seen.

After a restart on the same data directory, the first request naming such a model
(:meth:`ServerState.live_model <tinkex_actors.server.state.ServerState.live_model>`)
registers it again and queues :func:`restore_job` as its queue's first job; the request
itself queues behind it, and the queue continues after the saved ``seq_id``, so the client's
next ``seq_id`` runs at once. The restore consumes the save (its row becomes ``live`` and its
files are deleted), so weights saved at one shutdown can never come back after a later crash.

Not saved: gradients accumulated by a ``forward_backward`` whose ``optim_step`` had not run
when the server stopped (the engine API has no way to save them), futures, and samplers made
from a live adapter (``save_weights_and_get_sampling_client``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tinkex_actors.server.store_live import MODEL_LIVE, LiveModelRow

if TYPE_CHECKING:
    from tinkex_actors.server.state import LiveModel, ServerState

__all__ = ["RESTORE_SEQ_ID", "restore_job", "save_live_models"]

#: The restore job's place in its model's queue: like creation (the implicit ``seq_id`` 0),
#: ahead of every ``seq_id`` a client sends.
RESTORE_SEQ_ID = 0


def save_live_models(state: ServerState) -> int:
    """Save every live adapter (call once no engine work runs); returns how many were saved.

    A model whose save fails stays ``live`` in the database, so the next start reports it
    lost rather than restoring something stale.
    """
    if state.host.error is not None or not state.host.is_ready():
        return 0  # no engine: nothing was ever live
    engine = state.host.engine
    with state.lock:
        models = [m for key, m in state.models.items() if key not in state.restoring]
    saved = 0
    for model in models:
        row = state.store.get_live_model(model.model_id)
        if row is None or row.status != MODEL_LIVE:
            continue  # its creation never ran (no run recorded) or it was released
        temp = state.files.new_temp()
        try:
            engine.save_state(model.model_id, temp, with_optimizer=True)
            dir_name, _ = state.files.commit(temp)
        except Exception:
            state.files.discard(temp)
            state.log.exception("tinkex.server.model_save_failed", model_id=model.model_id)
            continue
        position = state.scheduler.lane_position(model.model_id)
        replaced = state.store.mark_model_saved(model.model_id, dir_name, position, time.time())
        if replaced is not None:
            state.files.remove(replaced)
        saved += 1
    if saved:
        state.log.info("tinkex.server.models_saved", count=saved)
    return saved


def restore_job(
    state: ServerState, model: LiveModel, saved: LiveModelRow
) -> tuple[Callable[[], dict[str, Any]], Callable[[], None]]:
    """The queue job that rebuilds ``model`` from its shutdown save, and its failure cleanup.

    If the job is dropped before it ran (the server stopped again first), the save stays
    valid for the next start. If it fails, the model is marked lost and its queue's waiting
    requests fail.
    """
    assert saved.dir_name is not None
    directory = state.files.path(saved.dir_name)
    started = False

    def run() -> dict[str, Any]:
        nonlocal started
        started = True
        with state.lock:
            released = state.models.get(model.model_id) is not model
            if released:
                state.restoring.discard(model.model_id)
        if released:  # its session ended while this waited; the save went with it
            return {"model_id": model.model_id, "type": "restore_model"}
        engine = state.host.engine
        engine.create_adapter(model.model_id, model.base.name, model.lora)
        try:
            engine.load_state(model.model_id, directory, with_optimizer=True)
        except BaseException:
            engine.drop_adapter(model.model_id)
            raise
        consumed = state.store.mark_model_live(model.model_id)
        with state.lock:
            state.restoring.discard(model.model_id)
        if consumed is not None:
            state.files.remove(consumed)
        state.log.info(
            "tinkex.server.model_restored", model_id=model.model_id, last_seq_id=saved.last_seq
        )
        return {"model_id": model.model_id, "type": "restore_model"}

    def on_failure() -> None:
        with state.lock:
            state.restoring.discard(model.model_id)
            state.models.pop(model.model_id, None)
        if not started:
            return
        stale = state.store.mark_model_lost(model.model_id)
        if stale is not None:
            state.files.remove(stale)
        state.scheduler.remove_lane(model.model_id)

    return run, on_failure
