"""The end of a session (finished or expired), and the sweep that expires idle sessions.

Ending a session releases its live adapters (each unloaded after the work already queued for
it; no new request reaches them) and its samplers, and deletes the saves of its models made at
the last shutdown. Its sessions row, training runs and checkpoints stay. Samplers made from a
base model or a checkpoint path keep answering ``asample`` (they are rebuilt from their recorded
source: nothing was lost); those made from a live adapter answer 404, as after a restart.

With ``--session-timeout`` a session expires once no heartbeat came for that long: checked by
every call naming it and by the periodic sweep. Time the server was down does not count: at
start-up every active session's heartbeat clock restarts.
"""

from __future__ import annotations

import time

from tinkex_actors.server.routes.models import release_session_models
from tinkex_actors.server.routes.sampling import release_session_samplers
from tinkex_actors.server.state import ServerState

__all__ = ["end_session", "expire_idle_sessions"]


def end_session(state: ServerState, session_id: str) -> None:
    """Release what a finished or expired session holds."""
    release_session_models(state, session_id)
    release_session_samplers(state, session_id)
    for dir_name in state.store.release_session_models(session_id):
        state.files.remove(dir_name)


def expire_idle_sessions(state: ServerState) -> list[str]:
    """Expire every active session whose heartbeat is overdue; returns their ids."""
    timeout = state.settings.session_timeout
    if timeout <= 0:
        return []
    expired = state.store.idle_sessions(time.time() - timeout)
    return [session_id for session_id in expired if state.expire_session(session_id)]
