"""Run state and resource locks in PostgreSQL (``PLANGATE_DATABASE_URL``), shared by hosts.

Same records, same transactions and the same "before / after" discipline as the SQLite
``StateStore`` (``app.execute.state``; contract in ``app.execute.store``): an attempt is committed
``running`` before its action starts and finished after, so a crash leaves it *interrupted*.
What sharing one database adds:

- resource locks (``PostgresLockManager``) exclude runs on *every* host using the database, not
  only on one machine: two GitHub Actions runners executing plans that lock the same resource
  wait for (or fail fast on) each other. Leases work as in SQLite: a holder that dies stops
  renewing and its locks expire. Acquiring takes a transaction-level advisory lock per
  resource, in one order, so two acquirers never deadlock and "all or nothing" holds.
- writes that number completed steps (``seq``) serialize per plan digest on an advisory lock,
  since PostgreSQL has no ``BEGIN IMMEDIATE``.

Tables are prefixed ``plangate_`` so the database can be shared with the inbox (and others).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import psycopg

from app.execute.locks import LockHolder, LockManager
from app.execute.store import (
    AttemptRecord,
    CachedResult,
    CompletedStep,
    Phase,
    RunRecord,
)
from app.storage.postgres import Connections, Result, ensure_schema, redact_url

__all__ = ["PostgresLockManager", "PostgresStateStore"]

SCHEMA_VERSION = 1

#: advisory lock namespaces (``pg_advisory_xact_lock(ns, hashtext(name))``)
_DIGEST_LOCKS = 7207
_RESOURCE_LOCKS = 7208

_SCHEMA = """
CREATE TABLE IF NOT EXISTS plangate_runs (
    digest TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    plan_id TEXT NOT NULL,
    plan_path TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    invocations INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS plangate_attempts (
    digest TEXT NOT NULL,
    phase TEXT NOT NULL,
    step_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    status TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    finished_at DOUBLE PRECISION,
    error_kind TEXT,
    error TEXT,
    PRIMARY KEY (digest, phase, step_id, attempt)
);
CREATE TABLE IF NOT EXISTS plangate_steps (
    digest TEXT NOT NULL,
    phase TEXT NOT NULL,
    step_id TEXT NOT NULL,
    status TEXT NOT NULL,
    seq INTEGER NOT NULL,
    outputs TEXT NOT NULL DEFAULT '{}',
    usage TEXT NOT NULL DEFAULT '{}',
    error TEXT,
    finished_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (digest, phase, step_id)
);
CREATE INDEX IF NOT EXISTS plangate_steps_by_seq ON plangate_steps (digest, seq);
CREATE TABLE IF NOT EXISTS plangate_sagas (
    digest TEXT PRIMARY KEY,
    final_status TEXT NOT NULL,
    reason TEXT NOT NULL,
    started_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS plangate_shapes (
    digest TEXT PRIMARY KEY,
    plan_id TEXT NOT NULL,
    shape TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS plangate_step_cache (
    key TEXT PRIMARY KEY,
    action TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    ttl DOUBLE PRECISION NOT NULL,
    outputs TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS plangate_locks (
    resource TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    plan_id TEXT NOT NULL,
    acquired_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
)
"""

_RUN = "digest, run_id, plan_id, status, reason, invocations"
_ATTEMPT = "phase, step_id, attempt, status, error_kind, error"


def _dump(value: dict[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))


def _lock_digest(conn: psycopg.Connection, digest: str) -> None:
    conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_DIGEST_LOCKS, digest))


def _next_seq(conn: psycopg.Connection, digest: str) -> int:
    row = conn.execute(
        "SELECT COALESCE(MAX(seq), 0) FROM plangate_steps WHERE digest=%s", (digest,)
    ).fetchone()
    return int(row[0]) + 1 if row else 1


def _put_step(
    conn: psycopg.Connection,
    digest: str,
    phase: str,
    step_id: str,
    status: str,
    seq: int,
    outputs: str,
    usage: str,
    error: str | None,
    now: float,
) -> None:
    """``INSERT OR REPLACE``: the whole row is the new outcome."""
    conn.execute(
        "INSERT INTO plangate_steps (digest, phase, step_id, status, seq, outputs, usage, error,"
        " finished_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (digest, phase, step_id) DO UPDATE SET status=EXCLUDED.status,"
        " seq=EXCLUDED.seq, outputs=EXCLUDED.outputs, usage=EXCLUDED.usage,"
        " error=EXCLUDED.error, finished_at=EXCLUDED.finished_at",
        (digest, phase, step_id, status, seq, outputs, usage, error, now),
    )


class PostgresStateStore:
    """``RunStateStore`` in PostgreSQL. All writes commit before returning."""

    def __init__(self, url: str) -> None:
        # one run is one event loop: a couple of connections (and the lock heartbeat) suffice
        self._conns = Connections(url, max_size=4)
        ensure_schema(
            self._conns,
            component="state",
            version=SCHEMA_VERSION,
            ddl=_SCHEMA,
            where=redact_url(url),
        )

    @property
    def location(self) -> str:
        return redact_url(self._conns.url)

    def close(self) -> None:
        self._conns.close()

    def lock_manager(
        self,
        *,
        now: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        lease: float = 60.0,
        skew: float = 0.0,
    ) -> LockManager:
        return PostgresLockManager(self._conns, now=now, sleep=sleep, lease=lease, skew=skew)

    def _q(self, query: str, args: Sequence[Any] = ()) -> Result:
        return self._conns.execute(query, args)

    # -- runs ------------------------------------------------------------------------------

    def get_run(self, digest: str) -> RunRecord | None:
        row = self._q(f"SELECT {_RUN} FROM plangate_runs WHERE digest=%s", (digest,)).fetchone()
        return RunRecord(*row) if row else None

    def start_run(
        self, digest: str, run_id: str, plan_id: str, plan_path: str, now: float
    ) -> tuple[RunRecord, bool]:
        row = self._conns.run(
            lambda c: c.execute(
                "INSERT INTO plangate_runs (digest, run_id, plan_id, plan_path, status,"
                " created_at, updated_at) VALUES (%s, %s, %s, %s, 'running', %s, %s)"
                " ON CONFLICT (digest) DO UPDATE SET status='running', reason='',"
                " updated_at=EXCLUDED.updated_at, invocations=plangate_runs.invocations+1"
                f" RETURNING {_RUN}, (xmax::text <> '0') AS resumed",
                (digest, run_id, plan_id, plan_path, now, now),
            ).fetchone()
        )
        assert row is not None
        return RunRecord(*row[:6]), bool(row[6])

    def finish_run(self, digest: str, status: str, reason: str, now: float) -> None:
        # a cancellation (possibly from another host) is never overwritten by the run it
        # cancelled; only ``reset_run`` (``--restart``) clears it
        self._q(
            "UPDATE plangate_runs SET status=%s, reason=%s, updated_at=%s WHERE digest=%s"
            " AND status <> 'cancelled'",
            (status, reason, now, digest),
        )

    def cancel_run(self, digest: str, reason: str, now: float) -> RunRecord | None:
        self._q(
            "UPDATE plangate_runs SET status='cancelled', reason=%s, updated_at=%s WHERE digest=%s",
            (reason, now, digest),
        )
        return self.get_run(digest)

    def retry_compensations(self, digest: str, reason: str, now: float) -> int:
        def unit(c: psycopg.Connection) -> int:
            cur = c.execute(
                "DELETE FROM plangate_steps WHERE digest=%s AND phase='compensate'"
                " AND status='failed'",
                (digest,),
            )
            c.execute(
                "UPDATE plangate_runs SET status='retrying', reason=%s, updated_at=%s"
                " WHERE digest=%s",
                (reason, now, digest),
            )
            return cur.rowcount

        return self._conns.run(unit)

    def reset_run(self, digest: str) -> None:
        def unit(c: psycopg.Connection) -> None:
            for table in ("runs", "attempts", "steps", "sagas", "shapes"):
                c.execute(f"DELETE FROM plangate_{table} WHERE digest=%s", (digest,))  # type: ignore[call-overload]

        self._conns.run(unit)

    def record_shape(self, digest: str, plan_id: str, shape: str) -> None:
        self._q(
            "INSERT INTO plangate_shapes (digest, plan_id, shape) VALUES (%s, %s, %s)"
            " ON CONFLICT (digest) DO NOTHING",
            (digest, plan_id, shape),
        )

    def paused_predecessor(self, plan_id: str, shape: str, digest: str) -> RunRecord | None:
        row = self._q(
            "SELECT r.digest, r.run_id, r.plan_id, r.status, r.reason, r.invocations"
            " FROM plangate_runs r JOIN plangate_shapes s ON s.digest = r.digest"
            " WHERE r.plan_id=%s AND s.shape=%s AND r.status='paused' AND r.digest <> %s"
            " ORDER BY r.updated_at DESC LIMIT 1",
            (plan_id, shape, digest),
        ).fetchone()
        return RunRecord(*row) if row else None

    def adopt(self, old: str, new: str, now: float) -> int:
        def unit(c: psycopg.Connection) -> int:
            _lock_digest(c, new)
            c.execute(
                "INSERT INTO plangate_attempts SELECT %s, phase, step_id, attempt, status,"
                " idempotency_key, started_at, finished_at, error_kind, error"
                " FROM plangate_attempts WHERE digest=%s AND status <> 'running'"
                " ON CONFLICT DO NOTHING",
                (new, old),
            )
            cur = c.execute(
                "INSERT INTO plangate_steps SELECT %s, phase, step_id, status, seq, outputs,"
                " usage, error, finished_at FROM plangate_steps WHERE digest=%s"
                " AND phase='step' AND status='succeeded' ON CONFLICT DO NOTHING",
                (new, old),
            )
            c.execute(
                "UPDATE plangate_runs SET status='superseded', reason=%s, updated_at=%s"
                " WHERE digest=%s",
                (f"resumed as {new} (budget raised)", now, old),
            )
            return cur.rowcount

        return self._conns.run(unit)

    def begin_saga(self, digest: str, final_status: str, reason: str, now: float) -> None:
        self._q(
            "INSERT INTO plangate_sagas (digest, final_status, reason, started_at)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (digest) DO NOTHING",
            (digest, final_status, reason, now),
        )

    def saga(self, digest: str) -> tuple[str, str] | None:
        row = self._q(
            "SELECT final_status, reason FROM plangate_sagas WHERE digest=%s", (digest,)
        ).fetchone()
        return (row[0], row[1]) if row else None

    # -- attempts --------------------------------------------------------------------------

    def attempts_so_far(self, digest: str, phase: Phase, step_id: str) -> int:
        row = self._q(
            "SELECT COALESCE(MAX(attempt), 0) FROM plangate_attempts WHERE digest=%s"
            " AND phase=%s AND step_id=%s",
            (digest, phase, step_id),
        ).fetchone()
        return int(row[0]) if row else 0

    def begin_attempt(
        self, digest: str, phase: Phase, step_id: str, attempt: int, key: str, now: float
    ) -> None:
        """Committed *before* the action runs: if we die now, the attempt reads interrupted."""
        self._q(
            "INSERT INTO plangate_attempts (digest, phase, step_id, attempt, status,"
            " idempotency_key, started_at) VALUES (%s, %s, %s, %s, 'running', %s, %s)",
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
        self._q(
            "UPDATE plangate_attempts SET status='failed', finished_at=%s, error_kind=%s,"
            " error=%s WHERE digest=%s AND phase=%s AND step_id=%s AND attempt=%s",
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
        def unit(c: psycopg.Connection) -> int:
            _lock_digest(c, digest)
            c.execute(
                "UPDATE plangate_attempts SET status='succeeded', finished_at=%s"
                " WHERE digest=%s AND phase=%s AND step_id=%s AND attempt=%s",
                (now, digest, phase, step_id, attempt),
            )
            seq = _next_seq(c, digest)
            _put_step(
                c, digest, phase, step_id, "succeeded", seq, _dump(outputs), _dump(usage), None, now
            )
            return seq

        return self._conns.run(unit)

    def fail_step(
        self, digest: str, phase: Phase, step_id: str, status: str, error: str, now: float
    ) -> None:
        def unit(c: psycopg.Connection) -> None:
            _lock_digest(c, digest)
            seq = _next_seq(c, digest)
            _put_step(c, digest, phase, step_id, status, seq, "{}", "{}", error, now)

        self._conns.run(unit)

    def mark_step_done_by_hand(self, digest: str, step_id: str, now: float) -> None:
        def unit(c: psycopg.Connection) -> None:
            _lock_digest(c, digest)
            c.execute(
                "UPDATE plangate_attempts SET status='failed', finished_at=%s,"
                " error_kind='interrupted', error='interrupted; marked done by hand'"
                " WHERE digest=%s AND phase='step' AND step_id=%s AND status='running'",
                (now, digest, step_id),
            )
            seq = _next_seq(c, digest)
            _put_step(c, digest, "step", step_id, "succeeded", seq, "{}", "{}", None, now)

        self._conns.run(unit)

    def mark_interrupted(self, digest: str, phase: Phase, step_id: str, now: float) -> None:
        self._q(
            "UPDATE plangate_attempts SET status='interrupted', finished_at=%s,"
            " error_kind='interrupted',"
            " error='the process running this attempt stopped before it finished'"
            " WHERE digest=%s AND phase=%s AND step_id=%s AND status='running'",
            (now, digest, phase, step_id),
        )

    def running_attempts(self, digest: str) -> list[AttemptRecord]:
        rows = self._q(
            f"SELECT {_ATTEMPT} FROM plangate_attempts WHERE digest=%s AND status='running'"
            " ORDER BY started_at",
            (digest,),
        ).fetchall()
        return [AttemptRecord(*row) for row in rows]

    def completed(self, digest: str, phase: Phase) -> dict[str, CompletedStep]:
        rows = self._q(
            "SELECT step_id, status, seq, outputs, usage, error FROM plangate_steps"
            " WHERE digest=%s AND phase=%s ORDER BY seq",
            (digest, phase),
        ).fetchall()
        return {
            r[0]: CompletedStep(r[0], r[1], r[2], json.loads(r[3]), json.loads(r[4]), r[5])
            for r in rows
        }

    def attempts(self, digest: str) -> list[AttemptRecord]:
        rows = self._q(
            f"SELECT {_ATTEMPT} FROM plangate_attempts WHERE digest=%s"
            " ORDER BY started_at, attempt",
            (digest,),
        ).fetchall()
        return [AttemptRecord(*row) for row in rows]

    # -- step result cache -----------------------------------------------------------------

    def cache_get(self, key: str, now: float) -> CachedResult | None:
        row = self._q(
            "SELECT action, created_at, ttl, outputs FROM plangate_step_cache WHERE key=%s",
            (key,),
        ).fetchone()
        if row is None:
            return None
        action, created_at, ttl, outputs = row
        if not (created_at <= now < created_at + ttl):  # a clock that went back: not trusted
            return None
        return CachedResult(key, action, created_at, ttl, json.loads(outputs))

    def cache_put(
        self, key: str, action: str, outputs: dict[str, Any], ttl: float, now: float
    ) -> None:
        self._q(
            "INSERT INTO plangate_step_cache (key, action, created_at, ttl, outputs)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (key) DO UPDATE SET"
            " action=EXCLUDED.action, created_at=EXCLUDED.created_at, ttl=EXCLUDED.ttl,"
            " outputs=EXCLUDED.outputs",
            (key, action, now, ttl, _dump(outputs)),
        )


class PostgresLockManager(LockManager):
    """``LockManager`` whose leases live in PostgreSQL (``acquire``'s wait loop is inherited).

    A renewal is a network round trip that can block: a slow or failing-over server, a pool
    waiting for a free connection (up to its 10 s timeout, then retries), a row lock held by
    another transaction. The runner's heartbeat therefore awaits ``renew_async``, which renews
    on a worker thread (``asyncio.to_thread``; the pool is thread-safe), so the steps running
    meanwhile keep their progress and their ``timeout``s, as with the git-ref locks
    (``GitRefLocks.renew_async``). A release while a renewal is still in flight waits for it
    in PostgreSQL (the row lock), so the renewal cannot resurrect a released lock: it only
    updates rows, never inserts.
    """

    def __init__(
        self,
        conns: Connections,
        *,
        now: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        lease: float = 60.0,
        skew: float = 0.0,
    ) -> None:
        super().__init__(None, now=now, sleep=sleep, lease=lease, skew=skew)  # type: ignore[arg-type]
        self._conns = conns

    def try_acquire(self, resources: Sequence[str], holder: str, plan_id: str) -> list[LockHolder]:
        if not resources:
            return []
        now = self.now()
        wanted = sorted(set(resources))

        def unit(c: psycopg.Connection) -> list[LockHolder]:
            # one order for everyone: two acquirers of overlapping sets cannot deadlock
            c.execute(
                "SELECT pg_advisory_xact_lock(%s, h) FROM"
                " (SELECT DISTINCT hashtext(r) AS h FROM unnest(%s::text[]) r) x ORDER BY h",
                (_RESOURCE_LOCKS, wanted),
            )
            c.execute(
                "DELETE FROM plangate_locks WHERE expires_at <= %s AND resource = ANY(%s)",
                (now - self.skew, wanted),
            )
            rows = c.execute(
                "SELECT resource, holder, plan_id, expires_at FROM plangate_locks"
                ' WHERE resource = ANY(%s) AND holder <> %s ORDER BY resource COLLATE "C"',
                (wanted, holder),
            ).fetchall()
            conflicts = [LockHolder(*row) for row in rows]
            if not conflicts:
                with c.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO plangate_locks (resource, holder, plan_id, acquired_at,"
                        " expires_at) VALUES (%s, %s, %s, %s, %s) ON CONFLICT (resource) DO"
                        " UPDATE SET holder=EXCLUDED.holder, plan_id=EXCLUDED.plan_id,"
                        " acquired_at=EXCLUDED.acquired_at, expires_at=EXCLUDED.expires_at",
                        [(r, holder, plan_id, now, now + self.lease) for r in wanted],
                    )
            return conflicts

        return self._conns.run(unit)

    async def renew_async(self, holder: str) -> int:
        """``renew`` on a worker thread: what the runner's heartbeat awaits. If the awaiting
        task is cancelled (the run ended) the thread still finishes its one UPDATE."""
        return await asyncio.to_thread(self.renew, holder)

    def renew(self, holder: str) -> int:
        """Blocking (a round trip to the server): from a coroutine, await ``renew_async``."""
        cur = self._conns.execute(
            "UPDATE plangate_locks SET expires_at=%s WHERE holder=%s",
            (self.now() + self.lease, holder),
        )
        return cur.rowcount

    def release(self, holder: str) -> None:
        self._conns.execute("DELETE FROM plangate_locks WHERE holder=%s", (holder,))

    def holders(self) -> list[LockHolder]:
        rows = self._conns.execute(
            "SELECT resource, holder, plan_id, expires_at FROM plangate_locks"
            ' ORDER BY resource COLLATE "C"'
        ).fetchall()
        return [LockHolder(*row) for row in rows]
