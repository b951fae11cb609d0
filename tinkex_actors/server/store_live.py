"""The ``live_models`` table: what became of each training run's live adapter across processes.

A row's ``status`` is ``live`` while a server process holds the adapter (from its creation,
or its restore, on), ``saved`` once a graceful shutdown wrote its weights and optimizer state
(``dir_name``, a directory under the checkpoints directory) together with the highest
``seq_id`` its queue had seen (``last_seq``), and ``lost`` when a process ended without saving
it (SIGKILL, a crash): at start-up every row still ``live`` becomes ``lost``. A run without a
row was unloaded or its session ended. A ``saved`` row is consumed by the restore: the save
is then deleted, so a later crash can never bring back stale weights.

:class:`LiveModelTable` is a part of :class:`~tinkex_actors.server.store.Store` (same
connection and lock); it lives here because it is its own concern.
"""

from __future__ import annotations

import sqlite3
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

__all__ = ["LIVE_MODELS_SCHEMA", "MODEL_LIVE", "MODEL_LOST", "MODEL_SAVED", "LiveModelRow"]

MODEL_LIVE, MODEL_SAVED, MODEL_LOST = "live", "saved", "lost"

LIVE_MODELS_SCHEMA = """
CREATE TABLE IF NOT EXISTS live_models (
    run_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    dir_name TEXT,
    last_seq INTEGER NOT NULL DEFAULT 0,
    saved_at REAL
);
"""

_RUNS_OF_SESSION = "SELECT run_id FROM training_runs WHERE session_id=?"


@dataclass(frozen=True)
class LiveModelRow:
    """What became of a run's live adapter (see the module docstring)."""

    run_id: str
    status: str
    dir_name: str | None
    last_seq: int
    saved_at: float | None


def _saved_dir(db: sqlite3.Connection, run_id: str) -> str | None:
    row = db.execute("SELECT dir_name FROM live_models WHERE run_id=?", (run_id,)).fetchone()
    return str(row[0]) if row and row[0] else None


class LiveModelTable:
    """The ``live_models`` methods of the store."""

    if TYPE_CHECKING:

        def _tx(self) -> AbstractContextManager[sqlite3.Connection]: ...
        def _one(self, sql: str, args: tuple[Any, ...] = ()) -> tuple[Any, ...] | None: ...
        def _all(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]: ...

    def get_live_model(self, run_id: str) -> LiveModelRow | None:
        """What became of a run's live adapter; None when it was released."""
        r = self._one("SELECT * FROM live_models WHERE run_id=?", (run_id,))
        return LiveModelRow(*r) if r else None

    def mark_model_live(self, run_id: str) -> str | None:
        """A process holds the adapter (again); returns the dir of a save it consumed."""
        with self._tx() as db:
            old = _saved_dir(db, run_id)
            db.execute(
                "INSERT OR REPLACE INTO live_models (run_id, status) VALUES (?, ?)",
                (run_id, MODEL_LIVE),
            )
        return old

    def mark_model_saved(self, run_id: str, dir_name: str, last_seq: int, now: float) -> str | None:
        """Record a shutdown save; returns the dir of an older save it replaces."""
        with self._tx() as db:
            old = _saved_dir(db, run_id)
            db.execute(
                "INSERT OR REPLACE INTO live_models VALUES (?,?,?,?,?)",
                (run_id, MODEL_SAVED, dir_name, last_seq, now),
            )
        return old if old != dir_name else None

    def mark_model_lost(self, run_id: str) -> str | None:
        """The adapter is gone for good; returns the dir of a save no longer usable."""
        with self._tx() as db:
            old = _saved_dir(db, run_id)
            db.execute(
                "INSERT OR REPLACE INTO live_models (run_id, status) VALUES (?, ?)",
                (run_id, MODEL_LOST),
            )
        return old

    def release_model(self, run_id: str) -> str | None:
        """Forget a run's adapter (unloaded); returns the dir of a save to delete."""
        with self._tx() as db:
            old = _saved_dir(db, run_id)
            db.execute("DELETE FROM live_models WHERE run_id=?", (run_id,))
        return old

    def release_session_models(self, session_id: str) -> list[str]:
        """Forget the adapters of a session's runs; returns the dirs of saves to delete."""
        with self._tx() as db:
            dirs = db.execute(
                "SELECT dir_name FROM live_models "
                f"WHERE dir_name IS NOT NULL AND run_id IN ({_RUNS_OF_SESSION})",
                (session_id,),
            ).fetchall()
            db.execute(
                f"DELETE FROM live_models WHERE run_id IN ({_RUNS_OF_SESSION})", (session_id,)
            )
        return [str(r[0]) for r in dirs]

    def mark_unsaved_models_lost(self) -> int:
        """At start-up: the adapters the previous process held but did not save are lost."""
        with self._tx() as db:
            count: int = db.execute(
                "UPDATE live_models SET status=? WHERE status=?", (MODEL_LOST, MODEL_LIVE)
            ).rowcount
        return count

    def saved_model_dirs(self) -> set[str]:
        """Every ``dir_name`` a shutdown save refers to."""
        rows = self._all("SELECT dir_name FROM live_models WHERE dir_name IS NOT NULL")
        return {r[0] for r in rows}
