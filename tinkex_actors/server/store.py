"""Durable server state in SQLite (WAL): sessions, training runs, checkpoints, samplers.

What became of each run's live adapter across server processes is tracked by the
:class:`~tinkex_actors.server.store_live.LiveModelTable` part (``store_live.py``).

One connection guarded by a lock serves the event loop and the worker threads; every
statement is short. Times are Unix seconds (floats). A checkpoint row is written only after
its files are complete on disk (see ``checkpoints.py``), so a listed checkpoint is whole.
Owners are tenant ids (a hash of the API key, never the key).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinkex_actors.server.store_live import LIVE_MODELS_SCHEMA, MODEL_LIVE, LiveModelTable

__all__ = ["CheckpointRow", "RunRow", "SamplerRow", "SessionRow", "Store"]

#: ``sessions.status`` values.
SESSION_ACTIVE, SESSION_FINISHED, SESSION_EXPIRED = "active", "finished", "expired"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    created_at REAL NOT NULL,
    last_heartbeat REAL NOT NULL,
    tags TEXT NOT NULL,
    user_metadata TEXT,
    sdk_version TEXT,
    project_id TEXT,
    display_name TEXT,
    status TEXT NOT NULL DEFAULT 'active'
);
CREATE INDEX IF NOT EXISTS sessions_owner ON sessions (owner, created_at);
CREATE TABLE IF NOT EXISTS training_runs (
    run_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    session_id TEXT NOT NULL,
    base_model TEXT NOT NULL,
    lora_rank INTEGER NOT NULL,
    train_mlp INTEGER NOT NULL,
    train_attn INTEGER NOT NULL,
    train_unembed INTEGER NOT NULL,
    seed INTEGER,
    user_metadata TEXT,
    created_at REAL NOT NULL,
    last_request_time REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_owner ON training_runs (owner, created_at);
CREATE TABLE IF NOT EXISTS checkpoints (
    run_id TEXT NOT NULL,
    checkpoint_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    owner TEXT NOT NULL,
    created_at REAL NOT NULL,
    size_bytes INTEGER NOT NULL,
    public INTEGER NOT NULL DEFAULT 0,
    expires_at REAL,
    user_metadata TEXT,
    dir_name TEXT NOT NULL,
    PRIMARY KEY (run_id, checkpoint_id)
);
CREATE INDEX IF NOT EXISTS checkpoints_owner ON checkpoints (owner, created_at);
CREATE TABLE IF NOT EXISTS samplers (
    sampler_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    session_id TEXT NOT NULL,
    base_model TEXT NOT NULL,
    model_path TEXT,
    source_model_id TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS samplers_session ON samplers (session_id);
"""


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True)


def _unjson(value: str | None) -> Any:
    return None if value is None else json.loads(value)


@dataclass(frozen=True)
class SessionRow:
    """A client session."""

    session_id: str
    owner: str
    created_at: float
    last_heartbeat: float
    tags: list[str]
    user_metadata: dict[str, Any] | None
    sdk_version: str | None
    project_id: str | None
    display_name: str | None
    status: str = "active"


@dataclass(frozen=True)
class RunRow:
    """A training run (= a model id; the adapter itself lives only in the engine)."""

    run_id: str
    owner: str
    session_id: str
    base_model: str
    lora_rank: int
    train_mlp: bool
    train_attn: bool
    train_unembed: bool
    seed: int | None
    user_metadata: dict[str, Any] | None
    created_at: float
    last_request_time: float


@dataclass(frozen=True)
class CheckpointRow:
    """A complete checkpoint on disk (``dir_name`` under the checkpoints directory)."""

    run_id: str
    checkpoint_id: str
    kind: str
    name: str
    owner: str
    created_at: float
    size_bytes: int
    public: bool
    expires_at: float | None
    user_metadata: dict[str, Any] | None
    dir_name: str


@dataclass(frozen=True)
class SamplerRow:
    """A sampling session; ``model_path`` / ``source_model_id`` say where its weights came from."""

    sampler_id: str
    owner: str
    session_id: str
    base_model: str
    model_path: str | None
    source_model_id: str | None
    created_at: float


class Store(LiveModelTable):
    """The SQLite database under the data directory."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA + LIVE_MODELS_SCHEMA)

    def close(self) -> None:
        """Checkpoint the WAL and close."""
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _all(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _one(self, sql: str, args: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        with self._lock:
            row: tuple[Any, ...] | None = self._db.execute(sql, args).fetchone()
            return row

    def _count(self, sql: str, args: tuple[Any, ...]) -> int:
        row = self._one(sql, args)
        return int(row[0]) if row else 0

    # ------------------------------------------------------------------ sessions
    def insert_session(self, row: SessionRow) -> None:
        """Record a new session."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO sessions VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    row.session_id,
                    row.owner,
                    row.created_at,
                    row.last_heartbeat,
                    json.dumps(row.tags),
                    _json(row.user_metadata),
                    row.sdk_version,
                    row.project_id,
                    row.display_name,
                    row.status,
                ),
            )

    @staticmethod
    def _session(r: tuple[Any, ...]) -> SessionRow:
        return SessionRow(
            r[0], r[1], r[2], r[3], json.loads(r[4]), _unjson(r[5]), r[6], r[7], r[8], r[9]
        )

    def get_session(self, session_id: str) -> SessionRow | None:
        """A session by id."""
        r = self._one("SELECT * FROM sessions WHERE session_id=?", (session_id,))
        return self._session(r) if r else None

    def touch_session(self, session_id: str, now: float) -> None:
        """Record a heartbeat."""
        with self._tx() as db:
            db.execute("UPDATE sessions SET last_heartbeat=? WHERE session_id=?", (now, session_id))

    def set_session_status(self, session_id: str, status: str) -> None:
        """Mark a session (``finished``)."""
        with self._tx() as db:
            db.execute("UPDATE sessions SET status=? WHERE session_id=?", (status, session_id))

    def expire_session(self, session_id: str) -> bool:
        """Mark an active session expired; False if it was not active (already ended)."""
        with self._tx() as db:
            changed = db.execute(
                "UPDATE sessions SET status=? WHERE session_id=? AND status=?",
                (SESSION_EXPIRED, session_id, SESSION_ACTIVE),
            ).rowcount
        return bool(changed)

    def idle_sessions(self, cutoff: float) -> list[str]:
        """Active sessions whose last heartbeat is older than ``cutoff``."""
        rows = self._all(
            "SELECT session_id FROM sessions WHERE status=? AND last_heartbeat<?",
            (SESSION_ACTIVE, cutoff),
        )
        return [r[0] for r in rows]

    def touch_active_sessions(self, now: float) -> int:
        """Record a heartbeat for every active session (at start-up: downtime is not idleness)."""
        with self._tx() as db:
            count: int = db.execute(
                "UPDATE sessions SET last_heartbeat=? WHERE status=?", (now, SESSION_ACTIVE)
            ).rowcount
        return count

    def list_sessions(self, owner: str, limit: int, offset: int) -> tuple[list[str], int]:
        """The owner's session ids, newest first, and how many there are in all."""
        rows = self._all(
            "SELECT session_id FROM sessions WHERE owner=? "
            "ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?",
            (owner, limit, offset),
        )
        total = self._count("SELECT COUNT(*) FROM sessions WHERE owner=?", (owner,))
        return [r[0] for r in rows], total

    def session_children(self, session_id: str) -> tuple[list[str], list[str]]:
        """Training run ids and sampler ids created in a session."""
        runs = self._all(
            "SELECT run_id FROM training_runs WHERE session_id=? ORDER BY created_at, rowid",
            (session_id,),
        )
        samplers = self._all(
            "SELECT sampler_id FROM samplers WHERE session_id=? ORDER BY created_at, rowid",
            (session_id,),
        )
        return [r[0] for r in runs], [r[0] for r in samplers]

    # ------------------------------------------------------------------ training runs
    def insert_run(self, row: RunRow) -> None:
        """Record a new training run."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO training_runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    row.run_id,
                    row.owner,
                    row.session_id,
                    row.base_model,
                    row.lora_rank,
                    int(row.train_mlp),
                    int(row.train_attn),
                    int(row.train_unembed),
                    row.seed,
                    _json(row.user_metadata),
                    row.created_at,
                    row.last_request_time,
                ),
            )
            # A run is created together with its live adapter.
            db.execute(
                "INSERT OR REPLACE INTO live_models (run_id, status) VALUES (?, ?)",
                (row.run_id, MODEL_LIVE),
            )

    @staticmethod
    def _run(r: tuple[Any, ...]) -> RunRow:
        return RunRow(
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            bool(r[5]),
            bool(r[6]),
            bool(r[7]),
            r[8],
            _unjson(r[9]),
            r[10],
            r[11],
        )

    def get_run(self, run_id: str) -> RunRow | None:
        """A training run by id."""
        r = self._one("SELECT * FROM training_runs WHERE run_id=?", (run_id,))
        return self._run(r) if r else None

    _ACCESSIBLE = (
        "(owner=? OR run_id IN (SELECT run_id FROM checkpoints WHERE public=1 "
        "AND (expires_at IS NULL OR expires_at>?)))"
    )

    def list_runs(
        self, owner: str, *, accessible: bool, now: float, limit: int, offset: int
    ) -> tuple[list[RunRow], int]:
        """The owner's runs (plus runs with public checkpoints if ``accessible``), newest first."""
        where, args = ("owner=?", (owner,)) if not accessible else (self._ACCESSIBLE, (owner, now))
        rows = self._all(
            f"SELECT * FROM training_runs WHERE {where} "
            "ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?",
            (*args, limit, offset),
        )
        total = self._count(f"SELECT COUNT(*) FROM training_runs WHERE {where}", args)
        return [self._run(r) for r in rows], total

    def run_has_public(self, run_id: str, now: float) -> bool:
        """Whether a run has at least one published, unexpired checkpoint."""
        return bool(
            self._one(
                "SELECT 1 FROM checkpoints WHERE run_id=? AND public=1 "
                "AND (expires_at IS NULL OR expires_at>?) LIMIT 1",
                (run_id, now),
            )
        )

    # ------------------------------------------------------------------ checkpoints
    @staticmethod
    def _checkpoint(r: tuple[Any, ...]) -> CheckpointRow:
        return CheckpointRow(
            r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7]), r[8], _unjson(r[9]), r[10]
        )

    def insert_checkpoint(self, row: CheckpointRow, *, replace: bool) -> str | None:
        """Record a complete checkpoint; returns the replaced (or expired) one's ``dir_name``.

        Raises:
            sqlite3.IntegrityError: a live one exists and ``replace`` is false.
        """
        with self._tx() as db:
            old = db.execute(
                "SELECT dir_name, expires_at FROM checkpoints WHERE run_id=? AND checkpoint_id=?",
                (row.run_id, row.checkpoint_id),
            ).fetchone()
            if old is not None and (old[1] is not None and old[1] <= row.created_at):
                replace = True
            if old is not None and replace:
                db.execute(
                    "DELETE FROM checkpoints WHERE run_id=? AND checkpoint_id=?",
                    (row.run_id, row.checkpoint_id),
                )
            db.execute(
                "INSERT INTO checkpoints VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    row.run_id,
                    row.checkpoint_id,
                    row.kind,
                    row.name,
                    row.owner,
                    row.created_at,
                    row.size_bytes,
                    int(row.public),
                    row.expires_at,
                    _json(row.user_metadata),
                    row.dir_name,
                ),
            )
            db.execute(
                "UPDATE training_runs SET last_request_time=? WHERE run_id=?",
                (row.created_at, row.run_id),
            )
        return str(old[0]) if old is not None and replace else None

    def get_checkpoint(self, run_id: str, checkpoint_id: str, now: float) -> CheckpointRow | None:
        """An unexpired checkpoint."""
        r = self._one(
            "SELECT * FROM checkpoints WHERE run_id=? AND checkpoint_id=? "
            "AND (expires_at IS NULL OR expires_at>?)",
            (run_id, checkpoint_id, now),
        )
        return self._checkpoint(r) if r else None

    def list_run_checkpoints(
        self, run_id: str, *, public_only: bool, now: float, limit: int, offset: int
    ) -> tuple[list[CheckpointRow], int]:
        """A run's unexpired checkpoints, newest first."""
        where = "run_id=? AND (expires_at IS NULL OR expires_at>?)"
        if public_only:
            where += " AND public=1"
        rows = self._all(
            f"SELECT * FROM checkpoints WHERE {where} "
            "ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?",
            (run_id, now, limit, offset),
        )
        total = self._count(f"SELECT COUNT(*) FROM checkpoints WHERE {where}", (run_id, now))
        return [self._checkpoint(r) for r in rows], total

    def list_user_checkpoints(
        self, owner: str, *, now: float, limit: int, offset: int
    ) -> tuple[list[CheckpointRow], int]:
        """Every unexpired checkpoint of the owner's runs, newest first."""
        where = "owner=? AND (expires_at IS NULL OR expires_at>?)"
        rows = self._all(
            f"SELECT * FROM checkpoints WHERE {where} "
            "ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?",
            (owner, now, limit, offset),
        )
        total = self._count(f"SELECT COUNT(*) FROM checkpoints WHERE {where}", (owner, now))
        return [self._checkpoint(r) for r in rows], total

    def latest_checkpoint(
        self, run_id: str, kind: str, *, public_only: bool, now: float
    ) -> CheckpointRow | None:
        """A run's newest unexpired checkpoint of one kind."""
        public = " AND public=1" if public_only else ""
        r = self._one(
            "SELECT * FROM checkpoints WHERE run_id=? AND kind=? "
            f"AND (expires_at IS NULL OR expires_at>?){public} "
            "ORDER BY created_at DESC, rowid DESC LIMIT 1",
            (run_id, kind, now),
        )
        return self._checkpoint(r) if r else None

    def delete_checkpoint(self, run_id: str, checkpoint_id: str) -> str | None:
        """Delete a checkpoint row; returns its ``dir_name`` (None if it was not there)."""
        with self._tx() as db:
            old = db.execute(
                "SELECT dir_name FROM checkpoints WHERE run_id=? AND checkpoint_id=?",
                (run_id, checkpoint_id),
            ).fetchone()
            db.execute(
                "DELETE FROM checkpoints WHERE run_id=? AND checkpoint_id=?",
                (run_id, checkpoint_id),
            )
        return str(old[0]) if old else None

    def set_public(self, run_id: str, checkpoint_id: str, public: bool) -> None:
        """Publish or unpublish."""
        with self._tx() as db:
            db.execute(
                "UPDATE checkpoints SET public=? WHERE run_id=? AND checkpoint_id=?",
                (int(public), run_id, checkpoint_id),
            )

    def set_expiry(self, run_id: str, checkpoint_id: str, expires_at: float | None) -> None:
        """Set (or clear) a checkpoint's expiry time."""
        with self._tx() as db:
            db.execute(
                "UPDATE checkpoints SET expires_at=? WHERE run_id=? AND checkpoint_id=?",
                (expires_at, run_id, checkpoint_id),
            )

    def expired_checkpoints(self, now: float) -> list[CheckpointRow]:
        """Checkpoints whose expiry time has passed."""
        rows = self._all(
            "SELECT * FROM checkpoints WHERE expires_at IS NOT NULL AND expires_at<=?", (now,)
        )
        return [self._checkpoint(r) for r in rows]

    def checkpoint_dirs(self) -> set[str]:
        """Every ``dir_name`` a checkpoint row refers to."""
        return {r[0] for r in self._all("SELECT dir_name FROM checkpoints")}

    # ------------------------------------------------------------------ samplers
    def insert_sampler(self, row: SamplerRow) -> None:
        """Record a sampling session."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO samplers VALUES (?,?,?,?,?,?,?)",
                (
                    row.sampler_id,
                    row.owner,
                    row.session_id,
                    row.base_model,
                    row.model_path,
                    row.source_model_id,
                    row.created_at,
                ),
            )

    def get_sampler(self, sampler_id: str) -> SamplerRow | None:
        """A sampling session by id."""
        r = self._one("SELECT * FROM samplers WHERE sampler_id=?", (sampler_id,))
        return SamplerRow(*r) if r else None
