"""The durable delivery log: every accepted webhook is written here *before* we answer 202.

SQLite in WAL mode under ``PLANGATE_DATA_DIR`` (``inbox.sqlite3``). The delivery id
(``X-GitHub-Delivery``) is the primary key, so GitHub's redeliveries (which reuse the id) are
stored once and processed once. States::

    queued -> processing -> done
       ^          |
       +-- retry -+-> dead          (after the worker's last attempt; ``plangate deliveries retry``)
    queued -> superseded            (a newer head SHA for the same pull request arrived)

``claim`` hands out the oldest ready delivery whose ordering key (``owner/repo#PR``) has no
earlier unfinished delivery, which gives per-pull-request ordering with several workers.
The log also remembers which check runs each delivery created (per repo, head SHA and name), so
a retried delivery updates the runs it already created instead of creating a second set, and
the App installations seen in ``installation`` events.

``InboxStore`` is the port the server consumes; ``Inbox`` (this module, SQLite: one host) and
``PostgresInbox`` (``app.server.inbox_pg``: several ``plangate serve`` replicas sharing one
database, claims leased) implement it, and ``open_inbox`` picks one from the settings. Both pass
the same behavioural tests (tests/server/test_server_inbox.py).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from app.dashboard.data import DeadLetter
from app.server.webhooks import Event, order_key

if TYPE_CHECKING:
    from app.settings import Settings

__all__ = ["SUPERSEDING_EVENTS", "Delivery", "Inbox", "InboxStore", "Status", "open_inbox"]

Status = Literal["queued", "processing", "done", "dead", "superseded"]

#: events that announce a (possibly new) head SHA and so make queued work for older heads moot
SUPERSEDING_EVENTS = frozenset({"pull_request", "check_suite"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    event TEXT NOT NULL,
    action TEXT,
    installation_id INTEGER,
    repo TEXT,
    order_key TEXT,
    head_sha TEXT,
    body BLOB NOT NULL,
    received_at REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'queued',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS deliveries_ready ON deliveries (status, next_attempt_at, seq);
CREATE INDEX IF NOT EXISTS deliveries_key ON deliveries (order_key, status, seq);
CREATE TABLE IF NOT EXISTS check_runs (
    delivery_id TEXT NOT NULL,
    repo TEXT NOT NULL,
    head_sha TEXT NOT NULL,
    name TEXT NOT NULL,
    check_run_id INTEGER NOT NULL,
    PRIMARY KEY (delivery_id, repo, head_sha, name)
);
CREATE INDEX IF NOT EXISTS check_runs_head ON check_runs (repo, head_sha);
CREATE TABLE IF NOT EXISTS installations (
    id INTEGER PRIMARY KEY,
    account TEXT,
    status TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS claims (
    key TEXT PRIMARY KEY,
    at REAL NOT NULL
);
"""

_COLUMNS = (
    "seq, id, event, action, installation_id, repo, order_key, head_sha, body, received_at, "
    "status, attempts, next_attempt_at, last_error, finished_at"
)


@dataclass(frozen=True, slots=True)
class _Pending:
    event: Event
    body: bytes
    now: float


@dataclass(frozen=True, slots=True)
class Delivery:
    """One stored delivery (a row of the log)."""

    seq: int
    id: str
    event: str
    action: str | None
    installation_id: int | None
    repo: str | None
    order_key: str | None
    head_sha: str | None
    body: bytes
    received_at: float
    status: Status
    attempts: int
    next_attempt_at: float
    last_error: str | None
    finished_at: float | None

    def to_event(self) -> Event:
        return Event.from_body(self.event, self.id, self.body)


class InboxStore(Protocol):
    """The durable delivery log the webhook endpoint, the worker and the CLI use.

    Every write commits before it returns (a 202 means stored). Times are the caller's clock
    (seconds). Errors: whatever the backend raises (the endpoint answers 5xx, the worker backs
    off); a duplicate delivery id is a ``False`` return, never an error.
    """

    @property
    def location(self) -> str:
        """Where the log lives, for people (a path, or a URL without password)."""
        ...

    def close(self) -> None: ...

    def add(self, event: Event, body: bytes, *, now: float) -> bool:
        """Store one delivery; False for an id already stored. Supersedes older-head work."""
        ...

    def add_many(self, items: list[tuple[Event, bytes, float]]) -> list[bool]:
        """``add`` for several deliveries in one transaction (group commit).

        Called from any thread: the webhook endpoint runs it on its commit thread, off the
        event loop, for stores without ``add_many_staged`` (``app.server.ingest``).
        """
        ...

    def claim(self, *, now: float) -> Delivery | None:
        """The oldest ready delivery, marked ``processing`` (attempts + 1); each handed out once.

        Ready: queued and due, and no earlier unfinished delivery with the same ordering key.
        """
        ...

    def complete(self, delivery_id: str, *, now: float) -> None: ...

    def fail(self, delivery_id: str, error: str, *, retry_at: float | None, now: float) -> None:
        """A failed attempt: queued again at ``retry_at``, or ``dead`` if None."""
        ...

    def resume(self, *, now: float | None = None) -> int:
        """At start: queue again what a dead process left ``processing``; returns how many."""
        ...

    def retry(self, delivery_id: str) -> bool: ...

    def get(self, delivery_id: str) -> Delivery | None: ...

    def list(self, *, status: str | None = None, limit: int = 50) -> list[Delivery]: ...

    def dead_lettered(self, limit: int) -> list[DeadLetter]: ...

    def depth(self) -> int: ...

    def counts(self) -> dict[str, int]: ...

    def next_due(self) -> float | None: ...

    def check_run_id(self, delivery_id: str, repo: str, head_sha: str, name: str) -> int | None: ...

    def has_check_runs(self, repo: str, head_sha: str) -> bool: ...

    def remember_check_run(
        self, delivery_id: str, repo: str, head_sha: str, name: str, check_run_id: int
    ) -> None: ...

    def record_installation(
        self, installation_id: int, *, account: str | None, status: str, now: float
    ) -> None: ...

    def installation_status(self, installation_id: int) -> str | None: ...

    def claim_once(self, key: str, *, now: float, every: float) -> bool:
        """Claim ``key`` at ``now`` unless it was claimed less than ``every`` seconds before.

        Atomic across every process sharing the store: of concurrent claims one wins. Used to
        send something at most once per interval from several replicas (the keyless approval
        dispatch). ``now`` is wall-clock time (it is compared across processes).
        """
        ...

    def release_claim(self, key: str, *, at: float) -> None:
        """Undo the claim made ``at`` (what it guarded failed), unless claimed again since."""
        ...


def open_inbox(settings: Settings, *, durable: bool = True) -> InboxStore:
    """The inbox the settings name: PostgreSQL if ``PLANGATE_DATABASE_URL`` is set, else SQLite
    under ``PLANGATE_DATA_DIR``."""
    if settings.database_url is not None:
        from app.server.inbox_pg import PostgresInbox

        return PostgresInbox(settings.database_url.get_secret_value())
    return Inbox.in_dir(settings.data_dir, durable=durable)


def _pushed_past(db: sqlite3.Connection, key: str, head: str, seq: int | None) -> str | None:
    """The id of an earlier ``synchronize`` of this pull request that moved it away from ``head``.

    GitHub does not order deliveries: a ``synchronize`` for an old head can arrive after the
    one for the newer head. Arrival order alone would then let the stale one supersede the newer
    work, leaving the newest head without check runs; the newer payload's ``before`` says which.
    """
    rows = db.execute(
        "SELECT id, body FROM deliveries WHERE order_key=? AND event='pull_request' "
        "AND action='synchronize' AND head_sha<>? AND seq<?",
        (key, head, seq),
    )
    return moved_away_from(rows, head)


def moved_away_from(rows: Iterable[tuple[object, bytes]], head: str) -> str | None:
    """Of earlier synchronize deliveries ``(id, body)``, the one whose ``before`` is ``head``."""
    for delivery_id, body in rows:
        try:
            before = json.loads(bytes(body)).get("before")
        except (ValueError, AttributeError):
            continue
        if before == head:
            return str(delivery_id)
    return None


class Inbox:
    """The delivery log. Thread-safe; one instance per process, several processes may share it.

    ``durable=True`` (the default) uses ``synchronous=FULL``: a 202 means the delivery survived
    even a power loss. ``durable=False`` (``synchronous=NORMAL``) still survives a killed process.
    """

    def __init__(self, path: Path, *, durable: bool = True) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            str(path), isolation_level=None, check_same_thread=False, timeout=10.0
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self._db.execute("PRAGMA busy_timeout=10000")
        for statement in filter(str.strip, _SCHEMA.split(";")):
            self._db.execute(statement)
        # read on every webhook: kept in memory so intake never waits behind a writer's fsync
        self._installations: dict[int, str] = {
            int(i): str(st) for i, st in self._db.execute("SELECT id, status FROM installations")
        }

    @classmethod
    def in_dir(cls, data_dir: Path, *, durable: bool = True) -> Inbox:
        return cls(Path(data_dir) / "inbox.sqlite3", durable=durable)

    @property
    def location(self) -> str:
        return str(self.path)

    def close(self) -> None:
        with self._lock:
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

    # -- writing -------------------------------------------------------------------------------

    def add(self, event: Event, body: bytes, *, now: float) -> bool:
        """Store a delivery; False if its id was already stored (a redelivery: not queued again).

        A pull_request/check_suite delivery supersedes queued (not yet started) deliveries for
        the same pull request at another head SHA: their results would be overwritten anyway.
        """
        return self.add_many([(event, body, now)])[0]

    def add_many(self, items: list[tuple[Event, bytes, float]]) -> list[bool]:
        """Store several deliveries in one transaction (one fsync): group commit for the server.

        Returns, per item, whether it was stored (False: duplicate id, also within ``items``).
        """
        return self._insert([_Pending(e, b, n) for e, b, n in items])

    def add_many_staged(
        self, items: list[tuple[Event, bytes, float]]
    ) -> tuple[list[bool], Callable[[], None]]:
        """``add_many`` in two halves, so the server's event loop does not wait for the fsync.

        The inserts run now, in a transaction left open under the inbox lock; the returned
        ``commit()`` (call it exactly once, from any thread) commits it, which with
        ``synchronous=FULL`` is the fsync, and releases the lock. Nothing is durable, and no
        other thread can use the inbox, until ``commit()`` has returned; if it raises, nothing
        of the batch was stored.
        """
        self._lock.acquire()
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                results = [self._insert_one(self._db, e, b, n) for e, b, n in items]
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        except BaseException:
            self._lock.release()
            raise

        def commit() -> None:
            try:
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            finally:
                self._lock.release()

        return results, commit

    def _insert(self, batch: list[_Pending]) -> list[bool]:
        results: list[bool] = []
        with self._tx() as db:
            for pending in batch:
                results.append(self._insert_one(db, pending.event, pending.body, pending.now))
        return results

    @staticmethod
    def _insert_one(db: sqlite3.Connection, event: Event, body: bytes, now: float) -> bool:
        key, head = order_key(event)
        cur = db.execute(
            "INSERT OR IGNORE INTO deliveries (id, event, action, installation_id, repo, "
            "order_key, head_sha, body, received_at, next_attempt_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
            (
                event.delivery_id,
                event.name,
                event.action,
                event.installation_id,
                event.repo_full_name,
                key,
                head,
                body,
                now,
            ),
        )
        if cur.rowcount == 0:
            return False
        if key and head and event.name in SUPERSEDING_EVENTS and "#" in key:
            newer = _pushed_past(db, key, head, cur.lastrowid)
            if newer is not None:  # a late delivery for an old head: it must not win
                db.execute(
                    "UPDATE deliveries SET status='superseded', finished_at=?, "
                    "last_error='superseded by delivery ' || ? WHERE seq=?",
                    (now, newer, cur.lastrowid),
                )
                return True
            db.execute(
                "UPDATE deliveries SET status='superseded', finished_at=?, "
                "last_error='superseded by delivery ' || ? "
                "WHERE order_key=? AND status='queued' AND head_sha IS NOT NULL "
                "AND head_sha<>? AND seq<?",
                (now, event.delivery_id, key, head, cur.lastrowid),
            )
        return True

    def claim(self, *, now: float) -> Delivery | None:
        """Mark the oldest ready delivery ``processing`` and return it (None if nothing is ready).

        Ready: queued, due, and no earlier unfinished delivery with the same ordering key.
        """
        with self._tx() as db:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM deliveries d WHERE d.status='queued' "
                "AND d.next_attempt_at<=? AND NOT EXISTS (SELECT 1 FROM deliveries e "
                "WHERE e.order_key=d.order_key AND e.seq<d.seq "
                "AND e.status IN ('queued','processing')) ORDER BY d.seq LIMIT 1",
                (now,),
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE deliveries SET status='processing', attempts=attempts+1 WHERE seq=?",
                (row[0],),
            )
        delivery = _row(row)
        return _replace(delivery, status="processing", attempts=delivery.attempts + 1)

    def complete(self, delivery_id: str, *, now: float) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE deliveries SET status='done', finished_at=?, last_error=NULL WHERE id=?",
                (now, delivery_id),
            )

    def fail(self, delivery_id: str, error: str, *, retry_at: float | None, now: float) -> None:
        """Record a failed attempt: queued again at ``retry_at``, or ``dead`` if None."""
        with self._tx() as db:
            if retry_at is None:
                db.execute(
                    "UPDATE deliveries SET status='dead', last_error=?, finished_at=? WHERE id=?",
                    (error[:2000], now, delivery_id),
                )
            else:
                db.execute(
                    "UPDATE deliveries SET status='queued', last_error=?, next_attempt_at=? "
                    "WHERE id=?",
                    (error[:2000], retry_at, delivery_id),
                )

    def resume(self, *, now: float | None = None) -> int:
        """After a crash: deliveries left ``processing`` are queued again. Returns how many.

        One host, one server: whatever is ``processing`` at start was left by a dead process.
        """
        with self._tx() as db:
            return db.execute(
                "UPDATE deliveries SET status='queued' WHERE status='processing'"
            ).rowcount

    def retry(self, delivery_id: str) -> bool:
        """Queue a dead (or finished) delivery again with a fresh attempt budget."""
        with self._tx() as db:
            return (
                db.execute(
                    "UPDATE deliveries SET status='queued', attempts=0, next_attempt_at=0, "
                    "finished_at=NULL WHERE id=? AND status<>'processing'",
                    (delivery_id,),
                ).rowcount
                == 1
            )

    # -- reading -------------------------------------------------------------------------------

    def get(self, delivery_id: str) -> Delivery | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM deliveries WHERE id=?", (delivery_id,)
            ).fetchone()
        return _row(row) if row else None

    def list(self, *, status: str | None = None, limit: int = 50) -> list[Delivery]:
        query = f"SELECT {_COLUMNS} FROM deliveries"
        args: tuple[object, ...] = ()
        if status:
            query += " WHERE status=?"
            args = (status,)
        query += " ORDER BY seq DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(query, (*args, limit)).fetchall()
        return [_row(r) for r in rows]

    def dead_lettered(self, limit: int) -> list[DeadLetter]:
        """Dead letters, newest first (the dashboard's ``DeadLetterSource``)."""
        rows = self.list(status="dead", limit=limit)
        return [
            DeadLetter(
                delivery_id=d.id,
                event=f"{d.event}.{d.action}" if d.action else d.event,
                attempts=d.attempts,
                last_error=d.last_error or "",
                at=datetime.fromtimestamp(d.finished_at or d.received_at, UTC),
            )
            for d in rows
        ]

    def depth(self) -> int:
        """Deliveries not finished yet (queued or processing)."""
        with self._lock:
            (n,) = self._db.execute(
                "SELECT COUNT(*) FROM deliveries WHERE status IN ('queued','processing')"
            ).fetchone()
        return int(n)

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT status, COUNT(*) FROM deliveries GROUP BY status"
            ).fetchall()
        return {str(s): int(n) for s, n in rows}

    def next_due(self) -> float | None:
        """When the earliest queued delivery becomes due (for the worker's sleep)."""
        with self._lock:
            (t,) = self._db.execute(
                "SELECT MIN(next_attempt_at) FROM deliveries WHERE status='queued'"
            ).fetchone()
        return None if t is None else float(t)

    # -- check runs and installations ----------------------------------------------------------

    def check_run_id(self, delivery_id: str, repo: str, head_sha: str, name: str) -> int | None:
        """The check run a delivery already created (a retry updates it instead of adding one)."""
        with self._lock:
            row = self._db.execute(
                "SELECT check_run_id FROM check_runs WHERE delivery_id=? AND repo=? "
                "AND head_sha=? AND name=?",
                (delivery_id, repo, head_sha, name),
            ).fetchone()
        return int(row[0]) if row else None

    def has_check_runs(self, repo: str, head_sha: str) -> bool:
        """Did any delivery publish check runs for this head already?"""
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM check_runs WHERE repo=? AND head_sha=? LIMIT 1", (repo, head_sha)
            ).fetchone()
        return row is not None

    def remember_check_run(
        self, delivery_id: str, repo: str, head_sha: str, name: str, check_run_id: int
    ) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO check_runs "
                "(delivery_id, repo, head_sha, name, check_run_id) VALUES (?, ?, ?, ?, ?)",
                (delivery_id, repo, head_sha, name, check_run_id),
            )

    def record_installation(
        self, installation_id: int, *, account: str | None, status: str, now: float
    ) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO installations (id, account, status, updated_at) "
                "VALUES (?, ?, ?, ?)",
                (installation_id, account, status, now),
            )
        self._installations[installation_id] = status

    def installation_status(self, installation_id: int) -> str | None:
        """As recorded by this process's worker (``installation`` events), from memory."""
        return self._installations.get(installation_id)

    def claim_once(self, key: str, *, now: float, every: float) -> bool:
        with self._tx() as db:  # BEGIN IMMEDIATE: one writer at a time, across processes
            cur = db.execute(
                "INSERT INTO claims (key, at) VALUES (?, ?) ON CONFLICT (key) "
                "DO UPDATE SET at=excluded.at WHERE claims.at <= ?",
                (key, now, now - every),
            )
            return cur.rowcount == 1

    def release_claim(self, key: str, *, at: float) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM claims WHERE key=? AND at=?", (key, at))


def _row(row: tuple[object, ...]) -> Delivery:
    return Delivery(*row)  # type: ignore[arg-type]


def _replace(d: Delivery, **changes: object) -> Delivery:
    return replace(d, **changes)  # type: ignore[arg-type]
