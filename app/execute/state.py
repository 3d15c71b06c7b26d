"""Durable run state in SQLite (WAL): what ran, what is running, what finished.

The embedded implementation of ``RunStateStore`` (``app.execute.store``); several hosts share
state through ``PostgresStateStore`` (``app.execute.state_pg``) instead, picked by
``open_state_store`` when ``PLANGATE_DATABASE_URL`` is set.

Why SQLite: one file under ``PLANGATE_DATA_DIR``, atomic commits, crash-safe with WAL, and
readable by a human with ``sqlite3`` when something is stuck. Every attempt is written *before*
the action runs (``running``) and again *after* (``succeeded``/``failed``), each in its own
commit, so after a crash (SIGKILL, power loss with ``synchronous=FULL``) the store says exactly
which attempts may have had an effect: an attempt left ``running`` is *interrupted*.

Runs are keyed by the plan digest: running the same digest again resumes that run. A run that
already ended (succeeded, compensated, ...) is final; ``reset_run`` starts over on purpose.

This module does blocking ``sqlite3`` calls from the event loop on purpose: each is a few
microseconds (no network, WAL appends), far cheaper than a thread hop per call.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_random

from app.errors import InputError
from app.execute.locks import LockManager
from app.execute.store import (
    AttemptRecord,
    CachedResult,
    CompletedStep,
    Phase,
    RunRecord,
    RunStateStore,
)

if TYPE_CHECKING:
    from app.settings import Settings

__all__ = [
    "AttemptRecord",
    "CachedResult",
    "CompletedStep",
    "RunRecord",
    "RunStateStore",
    "StateStore",
    "connect",
    "open_state_store",
]
#: bumped on incompatible schema changes; a newer database is refused, never rewritten
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    digest TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    plan_id TEXT NOT NULL,
    plan_path TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    invocations INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS attempts (
    digest TEXT NOT NULL,
    phase TEXT NOT NULL,
    step_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    status TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    error_kind TEXT,
    error TEXT,
    PRIMARY KEY (digest, phase, step_id, attempt)
);
CREATE TABLE IF NOT EXISTS steps (
    digest TEXT NOT NULL,
    phase TEXT NOT NULL,
    step_id TEXT NOT NULL,
    status TEXT NOT NULL,
    seq INTEGER NOT NULL,
    outputs TEXT NOT NULL DEFAULT '{}',
    usage TEXT NOT NULL DEFAULT '{}',
    error TEXT,
    finished_at REAL NOT NULL,
    PRIMARY KEY (digest, phase, step_id)
);
-- completion order: MAX(seq) per digest must not scan every step of a 10,000-step plan
CREATE INDEX IF NOT EXISTS steps_by_seq ON steps (digest, seq);
-- a saga, once begun, must finish even across crashes and human interventions
CREATE TABLE IF NOT EXISTS sagas (
    digest TEXT PRIMARY KEY,
    final_status TEXT NOT NULL,
    reason TEXT NOT NULL,
    started_at REAL NOT NULL
);
-- the plan without its budget: a paused run resumes under a new digest that only raised it
CREATE TABLE IF NOT EXISTS shapes (
    digest TEXT PRIMARY KEY,
    plan_id TEXT NOT NULL,
    shape TEXT NOT NULL
);
-- step result cache (``cache: {ttl}``): keyed by sha256 of (action, resolved inputs), shared
-- across plans and runs; only non-mutating steps are ever written or read
CREATE TABLE IF NOT EXISTS step_cache (
    key TEXT PRIMARY KEY,
    action TEXT NOT NULL,
    created_at REAL NOT NULL,
    ttl REAL NOT NULL,
    outputs TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS locks (
    resource TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    plan_id TEXT NOT NULL,
    acquired_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
"""


@retry(
    retry=retry_if_exception_type(sqlite3.OperationalError),
    stop=stop_after_delay(30),
    wait=wait_random(0.01, 0.1),
    reraise=True,
)
def _enable_wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL. Two first runs on a fresh data dir race here: changing the journal mode
    needs an exclusive lock and SQLite answers "database is locked" at once instead of waiting
    on the busy handler, so we retry (bounded) until the other process has switched it."""
    conn.execute("PRAGMA journal_mode=WAL")


def connect(path: Path, *, synchronous: Literal["NORMAL", "FULL"] = "NORMAL") -> sqlite3.Connection:
    """Open (and create) the state database in WAL mode.

    ``synchronous=NORMAL`` in WAL mode survives a process crash (SIGKILL) with every committed
    transaction intact; ``FULL`` also survives power loss at one fsync per commit.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=30000")
    _enable_wal(conn)
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA busy_timeout=30000")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        conn.close()
        raise InputError(
            f"{path}: state database has schema version {version}; this plangate knows "
            f"{SCHEMA_VERSION}",
            hint="upgrade plangate, or point --data-dir at another directory",
        )
    conn.executescript(_SCHEMA)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    return conn


def open_state_store(
    data_dir: Path,
    *,
    database_url: str | None = None,
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
) -> RunStateStore:
    """PostgreSQL at ``database_url`` if given (``PLANGATE_DATABASE_URL``), else SQLite in
    ``data_dir``."""
    if database_url is not None:
        from app.execute.state_pg import PostgresStateStore

        return PostgresStateStore(database_url)
    return StateStore.open(data_dir, synchronous=synchronous)


def state_store_for(settings: Settings, data_dir: Path | None = None) -> RunStateStore:
    """``open_state_store`` from the settings (``data_dir`` overrides ``PLANGATE_DATA_DIR``)."""
    url = settings.database_url.get_secret_value() if settings.database_url else None
    return open_state_store(data_dir or settings.data_dir, database_url=url)


class StateStore:
    """Run state in SQLite (one host). All writes commit before returning."""

    def __init__(self, conn: sqlite3.Connection, *, path: Path | None = None) -> None:
        self.conn = conn
        self.path = path

    @classmethod
    def open(
        cls, data_dir: Path, *, synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    ) -> StateStore:
        return cls(
            connect(data_dir / "state.db", synchronous=synchronous), path=data_dir / "state.db"
        )

    @property
    def location(self) -> str:
        return str(self.path) if self.path else "sqlite"

    def close(self) -> None:
        self.conn.close()

    def lock_manager(
        self,
        *,
        now: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        lease: float = 60.0,
        skew: float = 0.0,
    ) -> LockManager:
        """Leased locks in this file: every ``plangate run`` on the host sees them."""
        return LockManager(self.conn, now=now, sleep=sleep, lease=lease, skew=skew)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # -- runs ------------------------------------------------------------------------------

    def get_run(self, digest: str) -> RunRecord | None:
        row = self.conn.execute(
            "SELECT digest, run_id, plan_id, status, reason, invocations FROM runs WHERE digest=?",
            (digest,),
        ).fetchone()
        return RunRecord(*row) if row else None

    def start_run(
        self, digest: str, run_id: str, plan_id: str, plan_path: str, now: float
    ) -> tuple[RunRecord, bool]:
        """Create the run, or resume the existing one for ``digest``. Returns (run, resumed)."""
        with self._tx() as c:
            row = c.execute("SELECT run_id FROM runs WHERE digest=?", (digest,)).fetchone()
            if row is None:
                c.execute(
                    "INSERT INTO runs (digest, run_id, plan_id, plan_path, status, created_at,"
                    " updated_at) VALUES (?, ?, ?, ?, 'running', ?, ?)",
                    (digest, run_id, plan_id, plan_path, now, now),
                )
                resumed = False
            else:
                c.execute(
                    "UPDATE runs SET status='running', reason='', updated_at=?,"
                    " invocations=invocations+1 WHERE digest=?",
                    (now, digest),
                )
                resumed = True
        record = self.get_run(digest)
        assert record is not None
        return record, resumed

    def finish_run(self, digest: str, status: str, reason: str, now: float) -> None:
        # a cancellation (``cancel_run``, possibly from another process) is never overwritten
        # by the run it cancelled; only ``reset_run`` (``--restart``) clears it
        self.conn.execute(
            "UPDATE runs SET status=?, reason=?, updated_at=? WHERE digest=?"
            " AND status != 'cancelled'",
            (status, reason, now, digest),
        )

    def cancel_run(self, digest: str, reason: str, now: float) -> RunRecord | None:
        """Mark the run of ``digest`` cancelled (a queue request); None if there is no run."""
        self.conn.execute(
            "UPDATE runs SET status='cancelled', reason=?, updated_at=? WHERE digest=?",
            (reason, now, digest),
        )
        return self.get_run(digest)

    def retry_compensations(self, digest: str, reason: str, now: float) -> int:
        """Forget failed compensations so a re-run of the begun saga tries them again.

        The saga record stays (the run never goes forward again); the run leaves its final
        ``compensation_failed`` state so the runner resumes it. Returns how many were reset.
        """
        with self._tx() as c:
            cur = c.execute(
                "DELETE FROM steps WHERE digest=? AND phase='compensate' AND status='failed'",
                (digest,),
            )
            c.execute(
                "UPDATE runs SET status='retrying', reason=?, updated_at=? WHERE digest=?",
                (reason, now, digest),
            )
        return cur.rowcount

    def reset_run(self, digest: str) -> None:
        """Forget everything about ``digest`` (a deliberate fresh start by a human)."""
        with self._tx() as c:
            for table in ("runs", "attempts", "steps", "sagas", "shapes"):
                c.execute(f"DELETE FROM {table} WHERE digest=?", (digest,))

    def record_shape(self, digest: str, plan_id: str, shape: str) -> None:
        self.conn.execute(
            "INSERT OR IGNORE INTO shapes (digest, plan_id, shape) VALUES (?, ?, ?)",
            (digest, plan_id, shape),
        )

    def paused_predecessor(self, plan_id: str, shape: str, digest: str) -> RunRecord | None:
        """A paused run of the same plan that differs from ``digest`` only in its budget."""
        row = self.conn.execute(
            "SELECT r.digest, r.run_id, r.plan_id, r.status, r.reason, r.invocations"
            " FROM runs r JOIN shapes s ON s.digest = r.digest WHERE r.plan_id=? AND s.shape=?"
            " AND r.status='paused' AND r.digest != ? ORDER BY r.updated_at DESC LIMIT 1",
            (plan_id, shape, digest),
        ).fetchone()
        return RunRecord(*row) if row else None

    def adopt(self, old: str, new: str, now: float) -> int:
        """Carry the completed steps (and attempt history) of run ``old`` over to ``new``.

        ``old`` ends ``superseded``; returns how many completed steps were carried over.
        """
        with self._tx() as c:
            c.execute(
                "INSERT OR IGNORE INTO attempts SELECT ?, phase, step_id, attempt, status,"
                " idempotency_key, started_at, finished_at, error_kind, error FROM attempts"
                " WHERE digest=? AND status != 'running'",
                (new, old),
            )
            cur = c.execute(
                "INSERT OR IGNORE INTO steps SELECT ?, phase, step_id, status, seq, outputs,"
                " usage, error, finished_at FROM steps WHERE digest=? AND phase='step'"
                " AND status='succeeded'",
                (new, old),
            )
            c.execute(
                "UPDATE runs SET status='superseded', reason=?, updated_at=? WHERE digest=?",
                (f"resumed as {new} (budget raised)", now, old),
            )
        return cur.rowcount

    def begin_saga(self, digest: str, final_status: str, reason: str, now: float) -> None:
        """Recorded before the first compensation: a re-run resumes the saga, nothing else."""
        self.conn.execute(
            "INSERT OR IGNORE INTO sagas (digest, final_status, reason, started_at)"
            " VALUES (?, ?, ?, ?)",
            (digest, final_status, reason, now),
        )

    def saga(self, digest: str) -> tuple[str, str] | None:
        """(final status, reason) of a saga begun for ``digest``, if any."""
        row = self.conn.execute(
            "SELECT final_status, reason FROM sagas WHERE digest=?", (digest,)
        ).fetchone()
        return (row[0], row[1]) if row else None

    # -- attempts --------------------------------------------------------------------------

    def attempts_so_far(self, digest: str, phase: Phase, step_id: str) -> int:
        row = self.conn.execute(
            "SELECT COALESCE(MAX(attempt), 0) FROM attempts WHERE digest=? AND phase=?"
            " AND step_id=?",
            (digest, phase, step_id),
        ).fetchone()
        return int(row[0])

    def begin_attempt(
        self, digest: str, phase: Phase, step_id: str, attempt: int, key: str, now: float
    ) -> None:
        """Recorded *before* the action runs: if we die now, the attempt reads as interrupted."""
        self.conn.execute(
            "INSERT INTO attempts (digest, phase, step_id, attempt, status, idempotency_key,"
            " started_at) VALUES (?, ?, ?, ?, 'running', ?, ?)",
            (digest, phase, step_id, attempt, key, now),
        )

    def fail_attempt(
        self,
        digest: str,
        phase: Phase,
        step_id: str,
        attempt: int,
        kind: str,
        error: str,
        now: float,
    ) -> None:
        self.conn.execute(
            "UPDATE attempts SET status='failed', finished_at=?, error_kind=?, error=?"
            " WHERE digest=? AND phase=? AND step_id=? AND attempt=?",
            (now, kind, error, digest, phase, step_id, attempt),
        )

    def complete_step(
        self,
        digest: str,
        phase: Phase,
        step_id: str,
        attempt: int,
        outputs: dict[str, Any],
        usage: dict[str, Any],
        now: float,
    ) -> int:
        """Attempt succeeded and the step is done, in one transaction. Returns the step's seq."""
        with self._tx() as c:
            c.execute(
                "UPDATE attempts SET status='succeeded', finished_at=? WHERE digest=? AND phase=?"
                " AND step_id=? AND attempt=?",
                (now, digest, phase, step_id, attempt),
            )
            seq = self._next_seq(c, digest)
            c.execute(
                "INSERT OR REPLACE INTO steps (digest, phase, step_id, status, seq, outputs,"
                " usage, finished_at) VALUES (?, ?, ?, 'succeeded', ?, ?, ?, ?)",
                (digest, phase, step_id, seq, _dump(outputs), _dump(usage), now),
            )
        return seq

    def fail_step(
        self, digest: str, phase: Phase, step_id: str, status: str, error: str, now: float
    ) -> None:
        """A definitive outcome other than success (``failed``; ``blocked`` is not stored)."""
        with self._tx() as c:
            seq = self._next_seq(c, digest)
            c.execute(
                "INSERT OR REPLACE INTO steps (digest, phase, step_id, status, seq, error,"
                " finished_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (digest, phase, step_id, status, seq, error, now),
            )

    def mark_step_done_by_hand(self, digest: str, step_id: str, now: float) -> None:
        """A human checked an interrupted step and says its effect is in place."""
        with self._tx() as c:
            c.execute(
                "UPDATE attempts SET status='failed', finished_at=?, error_kind='interrupted',"
                " error='interrupted; marked done by hand' WHERE digest=? AND phase='step'"
                " AND step_id=? AND status='running'",
                (now, digest, step_id),
            )
            seq = self._next_seq(c, digest)
            c.execute(
                "INSERT OR REPLACE INTO steps (digest, phase, step_id, status, seq, outputs,"
                " usage, finished_at) VALUES (?, 'step', ?, 'succeeded', ?, '{}', '{}', ?)",
                (digest, step_id, seq, now),
            )

    def mark_interrupted(self, digest: str, phase: Phase, step_id: str, now: float) -> None:
        """Close attempts left ``running`` by a dead process, so they are not seen twice."""
        self.conn.execute(
            "UPDATE attempts SET status='interrupted', finished_at=?, error_kind='interrupted',"
            " error='the process running this attempt stopped before it finished'"
            " WHERE digest=? AND phase=? AND step_id=? AND status='running'",
            (now, digest, phase, step_id),
        )

    def running_attempts(self, digest: str) -> list[AttemptRecord]:
        """Attempts that began and never finished: their effect is unknown."""
        rows = self.conn.execute(
            "SELECT phase, step_id, attempt, status, error_kind, error FROM attempts"
            " WHERE digest=? AND status='running' ORDER BY started_at",
            (digest,),
        ).fetchall()
        return [AttemptRecord(*row) for row in rows]

    def completed(self, digest: str, phase: Phase) -> dict[str, CompletedStep]:
        rows = self.conn.execute(
            "SELECT step_id, status, seq, outputs, usage, error FROM steps"
            " WHERE digest=? AND phase=? ORDER BY seq",
            (digest, phase),
        ).fetchall()
        return {
            r[0]: CompletedStep(r[0], r[1], r[2], json.loads(r[3]), json.loads(r[4]), r[5])
            for r in rows
        }

    def attempts(self, digest: str) -> list[AttemptRecord]:
        rows = self.conn.execute(
            "SELECT phase, step_id, attempt, status, error_kind, error FROM attempts"
            " WHERE digest=? ORDER BY started_at, attempt",
            (digest,),
        ).fetchall()
        return [AttemptRecord(*row) for row in rows]

    # -- step result cache -----------------------------------------------------------------

    def cache_get(self, key: str, now: float) -> CachedResult | None:
        """The cached result for ``key`` if it is still fresh at ``now`` (else None).

        Fresh means ``created_at <= now < created_at + ttl``; an entry from the future (a clock
        that went backwards) is not trusted.
        """
        row = self.conn.execute(
            "SELECT action, created_at, ttl, outputs FROM step_cache WHERE key=?", (key,)
        ).fetchone()
        if row is None:
            return None
        action, created_at, ttl, outputs = row
        if not (created_at <= now < created_at + ttl):
            return None
        return CachedResult(key, action, created_at, ttl, json.loads(outputs))

    def cache_put(
        self, key: str, action: str, outputs: dict[str, Any], ttl: float, now: float
    ) -> None:
        """Store (or refresh) the result for ``key``; the newest result wins."""
        self.conn.execute(
            "INSERT OR REPLACE INTO step_cache (key, action, created_at, ttl, outputs)"
            " VALUES (?, ?, ?, ?, ?)",
            (key, action, now, ttl, _dump(outputs)),
        )

    @staticmethod
    def _next_seq(c: sqlite3.Connection, digest: str) -> int:
        row = c.execute("SELECT COALESCE(MAX(seq), 0) FROM steps WHERE digest=?", (digest,))
        return int(row.fetchone()[0]) + 1


def _dump(value: dict[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
