"""The local SQLite store: incidents, generation history and feedback; WAL mode, versioned schema.

All access goes through ``Store`` on one connection guarded by a lock; callers on the event loop
use the ``a*`` helpers, which run the statement in a worker thread. API keys are never stored.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from typing import Any

import platformdirs

from hapa_lsp import errors

# Each entry migrates the schema from version i to i+1; never edit a released entry, append a new one.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE incidents (
        incident_id TEXT PRIMARY KEY,
        error_code TEXT NOT NULL,
        method TEXT NOT NULL DEFAULT '',
        model TEXT NOT NULL DEFAULT '',
        detail TEXT NOT NULL DEFAULT '',
        operation TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL DEFAULT 'open',
        created_at REAL NOT NULL,
        resolved_at REAL
    );
    CREATE INDEX incidents_created ON incidents(created_at);
    CREATE INDEX incidents_operation_status ON incidents(operation, status);
    CREATE TABLE history (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        created_at REAL NOT NULL,
        kind TEXT NOT NULL DEFAULT 'generate',
        question TEXT NOT NULL DEFAULT '',
        uri TEXT NOT NULL DEFAULT '',
        language TEXT NOT NULL DEFAULT '',
        agent TEXT NOT NULL DEFAULT '',
        profile TEXT NOT NULL DEFAULT '{}',
        model TEXT NOT NULL DEFAULT '',
        prompt_tokens INTEGER NOT NULL DEFAULT 0,
        completion_tokens INTEGER NOT NULL DEFAULT 0,
        latency_ms REAL NOT NULL DEFAULT 0,
        status TEXT NOT NULL DEFAULT '',
        generated_code TEXT NOT NULL DEFAULT '',
        explanation TEXT NOT NULL DEFAULT '',
        incident_id TEXT
    );
    CREATE INDEX history_created ON history(created_at);
    CREATE TABLE feedback (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        created_at REAL NOT NULL,
        kind TEXT NOT NULL,
        request_id TEXT NOT NULL DEFAULT '',
        history_id INTEGER,
        uri TEXT NOT NULL DEFAULT '',
        language TEXT NOT NULL DEFAULT '',
        model TEXT NOT NULL DEFAULT '',
        accepted_chars INTEGER NOT NULL DEFAULT 0,
        shown_chars INTEGER NOT NULL DEFAULT 0,
        rating INTEGER,
        comment TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX feedback_created ON feedback(created_at);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
]


def default_path() -> str:
    """``hapa.db`` under the user's data directory (platformdirs)."""
    return os.path.join(platformdirs.user_data_dir("hapa-lsp", appauthor=False), "hapa.db")


class Store:
    """One SQLite database file; every public method is safe to call from any thread."""

    def __init__(self, path: str | None = None):
        self.path = path or default_path()
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None

    def open(self) -> Store:
        """Open (creating directories), switch to WAL and migrate to the newest schema; E5003 on failure."""
        try:
            if self.path != ":memory:":
                os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            conn = sqlite3.connect(self.path, check_same_thread=False, timeout=5.0, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._conn = conn
            self._migrate()
        except (sqlite3.Error, OSError) as exc:
            raise errors.StorageError(f"cannot open the database at {self.path}: {type(exc).__name__}") from exc
        return self

    @property
    def schema_version(self) -> int:
        """The schema version recorded in the database (PRAGMA user_version)."""
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        with self._lock:
            version = self.schema_version
            for i in range(version, len(MIGRATIONS)):
                self.conn.execute("BEGIN IMMEDIATE")
                try:
                    for stmt in _statements(MIGRATIONS[i]):
                        self.conn.execute(stmt)
                    self.conn.execute(f"PRAGMA user_version={i + 1}")
                    self.conn.execute("COMMIT")
                except Exception:
                    self.conn.execute("ROLLBACK")
                    raise

    @property
    def conn(self) -> sqlite3.Connection:
        """The open connection (opening the store on first use)."""
        if self._conn is None:
            self.open()
        assert self._conn is not None
        return self._conn

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        """Run one statement (autocommit) and return its rows; E5003 when the database fails."""
        try:
            with self._lock:
                return self.conn.execute(sql, storable(params)).fetchall()
        except _FAILURES as exc:
            raise errors.StorageError(f"database error: {type(exc).__name__}") from exc

    def insert(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> int:
        """Run one INSERT and return the new row id."""
        try:
            with self._lock:
                return int(self.conn.execute(sql, storable(params)).lastrowid or 0)
        except _FAILURES as exc:
            raise errors.StorageError(f"database error: {type(exc).__name__}") from exc

    async def arun(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a store call in a worker thread so the event loop never waits on the disk."""
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


# What binding and running a statement can raise besides sqlite3.Error: an int over 64 bits (OverflowError), a
# value sqlite3 cannot bind (ValueError, TypeError).
_FAILURES = (sqlite3.Error, ValueError, OverflowError, TypeError)


def storable(params: Sequence[Any] | dict[str, Any]) -> Sequence[Any] | dict[str, Any]:
    """Statement parameters with text that UTF-8 cannot encode written as backslash escapes (the storage edge:
    whatever a client sent, a row is written)."""
    if isinstance(params, dict):
        return {k: errors.storable_text(v) if isinstance(v, str) else v for k, v in params.items()}
    return tuple(errors.storable_text(v) if isinstance(v, str) else v for v in params)


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
