"""Leased resource locks in SQLite: a plan holds its ``resources`` for its whole run.

Why leases: a holder that dies (SIGKILL, lost runner) cannot release, so every lock carries an
expiry that the live holder keeps pushing forward (a heartbeat every ``lease/3``). Once a lease
has expired, anyone may take the resource. All resources of a plan are taken in one
``BEGIN IMMEDIATE`` transaction: all or nothing, so two plans can never deadlock on each other
by holding half of what they need.

Locally this is the SQLite file under the data dir shared by every ``plangate run`` on the host.
Across GitHub Actions runners it is not enough; see docs/executor.md (``concurrency:`` groups).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from app.errors import PlangateError

__all__ = ["LockBusy", "LockHolder", "LockManager"]


@dataclass(frozen=True, slots=True)
class LockHolder:
    resource: str
    holder: str
    plan_id: str
    expires_at: float


class LockBusy(PlangateError):
    """Another run holds a resource this plan declares."""

    default_hint = (
        "wait for the other run to finish (or use --lock-wait); if its process is gone, its "
        "lease expires on its own — see docs/runbooks.md ('A lock is orphaned')"
    )

    def __init__(self, holders: Sequence[LockHolder], *, now: float) -> None:
        described = "; ".join(
            f"'{h.resource}' is held by plan {h.plan_id} (run {h.holder}, lease ends in "
            f"{max(0.0, h.expires_at - now):.0f}s)"
            for h in holders
        )
        super().__init__(f"resources are locked: {described}")
        self.holders = list(holders)


async def poll_until_acquired(
    try_acquire: Callable[[], list[LockHolder]],
    *,
    wait: bool,
    wait_timeout: float,
    poll: float,
    on_wait: Callable[[list[LockHolder]], None] | None,
    now: Callable[[], float],
    sleep: Callable[[float], Awaitable[None]],
) -> None:
    """The one wait loop every lock backend shares: try, fail fast or tell once and poll.

    ``try_acquire`` is all-or-nothing and returns the conflicting holders (empty = acquired).
    """
    deadline = now() + wait_timeout
    told = False
    while True:
        conflicts = try_acquire()
        if not conflicts:
            return
        if not wait or now() >= deadline:
            raise LockBusy(conflicts, now=now())
        if on_wait is not None and not told:
            on_wait(conflicts)
            told = True
        await sleep(poll)


class LockManager:
    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        now: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        lease: float = 60.0,
        skew: float = 0.0,
    ) -> None:
        if lease <= 0 or skew < 0:
            raise ValueError("lease must be positive and skew not negative")
        self.conn = conn
        self.now = now
        self.sleep = sleep
        self.lease = lease
        #: how long after its expiry an unrenewed lock may be taken over (holders on other hosts
        #: write ``expires_at`` with their own clocks; 0 for one host, one clock)
        self.skew = skew

    def try_acquire(self, resources: Sequence[str], holder: str, plan_id: str) -> list[LockHolder]:
        """Take every resource or none. Returns the conflicting holders (empty: acquired)."""
        if not resources:
            return []
        now = self.now()
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            marks = ",".join("?" * len(resources))
            c.execute(
                f"DELETE FROM locks WHERE expires_at <= ? AND resource IN ({marks})",
                (now - self.skew, *resources),
            )
            rows = c.execute(
                f"SELECT resource, holder, plan_id, expires_at FROM locks WHERE resource IN"
                f" ({marks}) AND holder != ? ORDER BY resource",
                (*resources, holder),
            ).fetchall()
            conflicts = [LockHolder(*row) for row in rows]
            if not conflicts:
                c.executemany(
                    "INSERT OR REPLACE INTO locks (resource, holder, plan_id, acquired_at,"
                    " expires_at) VALUES (?, ?, ?, ?, ?)",
                    [(r, holder, plan_id, now, now + self.lease) for r in resources],
                )
        except BaseException:
            c.execute("ROLLBACK")
            raise
        c.execute("COMMIT")
        return conflicts

    async def acquire(
        self,
        resources: Sequence[str],
        holder: str,
        plan_id: str,
        *,
        wait: bool,
        wait_timeout: float = 600.0,
        poll: float = 1.0,
        on_wait: Callable[[list[LockHolder]], None] | None = None,
    ) -> None:
        """Acquire all ``resources``; wait (polling) up to ``wait_timeout`` or fail fast."""
        await poll_until_acquired(
            lambda: self.try_acquire(resources, holder, plan_id),
            wait=wait,
            wait_timeout=wait_timeout,
            poll=poll,
            on_wait=on_wait,
            now=self.now,
            sleep=self.sleep,
        )

    def renew(self, holder: str) -> int:
        """Push the lease of everything ``holder`` holds; returns how many locks it still has."""
        cur = self.conn.execute(
            "UPDATE locks SET expires_at=? WHERE holder=?", (self.now() + self.lease, holder)
        )
        return cur.rowcount

    def release(self, holder: str) -> None:
        self.conn.execute("DELETE FROM locks WHERE holder=?", (holder,))

    def holders(self) -> list[LockHolder]:
        rows = self.conn.execute(
            "SELECT resource, holder, plan_id, expires_at FROM locks ORDER BY resource"
        ).fetchall()
        return [LockHolder(*row) for row in rows]
