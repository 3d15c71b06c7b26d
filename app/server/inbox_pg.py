"""The delivery log in PostgreSQL, for several ``plangate serve`` replicas sharing one database.

Same states, dedupe, ordering and coalescing as the SQLite ``Inbox`` (``app.server.inbox``); what
changes is how work is handed out between processes that cannot see each other:

- ``claim`` picks the oldest ready delivery with ``SELECT ... FOR UPDATE SKIP LOCKED`` and marks it
  ``processing`` in the same statement, so two replicas claiming at once never get the same row
  and neither waits for the other. Per-pull-request ordering holds across replicas: a delivery is
  only ready when no earlier delivery of its pull request is queued or processing, whoever holds it.
- a claim is a **lease** (``lease_until``) that a heartbeat thread renews while this replica
  lives. A replica that dies (SIGKILL, lost node) stops renewing; once the lease has passed, its
  claims are ready again and any replica takes them (and ``resume`` at start counts them).
  ``resume`` never touches claims whose lease is still running: those belong to live replicas.
- ``complete``/``fail`` apply only while this replica still holds the claim (its claim token):
  a replica that lost its lease (paused longer than the lease) cannot overwrite the outcome of the
  replica that retook the delivery.

What is *not* shared: the in-memory installation cache is refreshed from the database every few
seconds, so an uninstall recorded by one replica reaches the others' intake within that delay
(the worker still refuses the work: GitHub rejects the token).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg

from app.dashboard.data import DeadLetter
from app.server.inbox import SUPERSEDING_EVENTS, Delivery, moved_away_from
from app.server.webhooks import Event, order_key
from app.storage.postgres import Connections, ensure_schema, redact_url

__all__ = ["PostgresInbox"]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS plangate_deliveries (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    event TEXT NOT NULL,
    action TEXT,
    installation_id BIGINT,
    repo TEXT,
    order_key TEXT,
    head_sha TEXT,
    body BYTEA NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    status TEXT NOT NULL DEFAULT 'queued',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at DOUBLE PRECISION NOT NULL DEFAULT 0,
    last_error TEXT,
    finished_at DOUBLE PRECISION,
    claimed_by TEXT,
    claim_token TEXT,
    lease_until DOUBLE PRECISION
);
-- unfinished rows only: claims stay cheap however many finished deliveries the table keeps
CREATE INDEX IF NOT EXISTS plangate_deliveries_open
    ON plangate_deliveries (seq) WHERE status IN ('queued', 'processing');
CREATE INDEX IF NOT EXISTS plangate_deliveries_open_key
    ON plangate_deliveries (order_key, seq) WHERE status IN ('queued', 'processing');
CREATE INDEX IF NOT EXISTS plangate_deliveries_status ON plangate_deliveries (status, seq);
CREATE TABLE IF NOT EXISTS plangate_check_runs (
    delivery_id TEXT NOT NULL,
    repo TEXT NOT NULL,
    head_sha TEXT NOT NULL,
    name TEXT NOT NULL,
    check_run_id BIGINT NOT NULL,
    PRIMARY KEY (delivery_id, repo, head_sha, name)
);
CREATE INDEX IF NOT EXISTS plangate_check_runs_head ON plangate_check_runs (repo, head_sha);
CREATE TABLE IF NOT EXISTS plangate_installations (
    id BIGINT PRIMARY KEY,
    account TEXT,
    status TEXT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS plangate_claims (
    key TEXT PRIMARY KEY,
    at DOUBLE PRECISION NOT NULL
)
"""

_COLUMNS = (
    "seq, id, event, action, installation_id, repo, order_key, head_sha, body, received_at, "
    "status, attempts, next_attempt_at, last_error, finished_at"
)

#: advisory lock namespace of an ordering key (``pg_advisory_xact_lock(_KEY_LOCKS, hashtext(key))``)
_KEY_LOCKS = 7206

# Candidates: queued and due, or processing under a lease that ran out (its replica is gone);
# and, as far as this statement's snapshot sees, nothing of the same pull request processing or
# queued before it. SKIP LOCKED: a row another replica is claiming right now is passed over.
_CANDIDATES = """
SELECT d.seq, d.order_key FROM plangate_deliveries d
WHERE d.status IN ('queued', 'processing')
  AND ((d.status = 'queued' AND d.next_attempt_at <= %(now)s)
       OR (d.status = 'processing' AND d.lease_until <= %(now)s))
  AND NOT EXISTS ({blocking})
ORDER BY d.seq
LIMIT 8
FOR UPDATE SKIP LOCKED
"""

# Another delivery of the same pull request in flight (whoever holds it), or queued before it.
_BLOCKING = (
    "SELECT 1 FROM plangate_deliveries e WHERE e.order_key = d.order_key "
    "AND e.status IN ('queued', 'processing') AND e.seq <> d.seq "
    "AND (e.status = 'processing' OR e.seq < d.seq)"
)

_TAKE = f"""
UPDATE plangate_deliveries
SET status = 'processing', attempts = attempts + 1, claimed_by = %(owner)s,
    claim_token = %(token)s, lease_until = %(lease_until)s
WHERE seq = %(seq)s
RETURNING {_COLUMNS}
"""


def _claim_unit(
    conn: psycopg.Connection, now: float, owner: str, token: str, lease: float
) -> tuple[Any, ...] | None:
    """One claim transaction (see ``PostgresInbox.claim``)."""
    # The candidates are the first rows in ``seq`` order: walk the partial index on unfinished
    # rows in that order and stop at the LIMIT. Without statistics (a fresh table, a burst
    # before autovacuum analyzes it) the planner would rather sort every queued row (measured:
    # 8-11 ms per claim with 3,000 queued, 0.6 ms with the ordered walk).
    conn.execute("SET LOCAL enable_sort = off")
    candidates = conn.execute(_CANDIDATES.replace("{blocking}", _BLOCKING), {"now": now}).fetchall()
    for seq, key in candidates:
        if key is not None:
            # The candidate query's snapshot may predate another replica's claim of this pull
            # request. Claimers (and writers) of a key hold its advisory lock until commit, so
            # once we hold it a fresh statement sees every earlier claim of the key.
            (mine,) = conn.execute(
                "SELECT pg_try_advisory_xact_lock(%s, hashtext(%s))", (_KEY_LOCKS, key)
            ).fetchone()  # type: ignore[misc]
            if not mine:
                continue  # being claimed or written right now: next round
            blocked = conn.execute(
                "SELECT 1 FROM plangate_deliveries d WHERE d.seq = %s AND EXISTS ("
                + _BLOCKING
                + ")",
                (seq,),
            ).fetchone()
            if blocked:
                continue
        return conn.execute(
            _TAKE, {"seq": seq, "owner": owner, "token": token, "lease_until": now + lease}
        ).fetchone()
    return None


class PostgresInbox:
    """The delivery log in PostgreSQL. Thread-safe; any number of instances per database.

    ``lease``: seconds a claim stays ours without renewal; the heartbeat renews every
    ``lease / 3`` (``heartbeat=False`` in tests that drive time by hand). ``clock`` is only used
    for the heartbeat, ``resume`` without ``now`` and the installation cache.
    """

    def __init__(
        self,
        url: str,
        *,
        lease: float = 60.0,
        clock: Callable[[], float] = time.time,
        heartbeat: bool = True,
        owner: str | None = None,
        installations_ttl: float = 5.0,
    ) -> None:
        if lease <= 0:
            raise ValueError("lease must be positive")
        # the webhook loop, the worker threads, the lease heartbeat, /healthz and /metrics
        self._conns = Connections(url, max_size=8)
        self.lease = lease
        self._clock = clock
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        ensure_schema(
            self._conns,
            component="inbox",
            version=SCHEMA_VERSION,
            ddl=_SCHEMA,
            where=redact_url(url),
        )
        #: delivery id -> claim token, for the claims this instance holds
        self._claims: dict[str, str] = {}
        self._claims_lock = threading.Lock()
        self._installations: dict[int, str] = {}
        self._installations_at = float("-inf")
        self._installations_ttl = installations_ttl
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        if heartbeat:
            self._heartbeat = threading.Thread(
                target=self._beat, name="plangate-inbox-lease", daemon=True
            )
            self._heartbeat.start()

    @property
    def location(self) -> str:
        return redact_url(self._conns.url)

    def close(self) -> None:
        """Stop renewing and disconnect. Claims still held expire with their lease."""
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(5)
        self._conns.close()

    # -- leases --------------------------------------------------------------------------------

    def renew(self, *, now: float | None = None) -> int:
        """Push the lease of every claim this instance holds; returns how many are still ours."""
        with self._claims_lock:
            tokens = list(self._claims.values())
        if not tokens:
            return 0
        until = (self._clock() if now is None else now) + self.lease
        cur = self._conns.execute(
            "UPDATE plangate_deliveries SET lease_until=%s "
            "WHERE claim_token = ANY(%s) AND status='processing'",
            (until, tokens),
        )
        return cur.rowcount

    def _beat(self) -> None:
        while not self._stop.wait(self.lease / 3):
            try:
                self.renew()
            except Exception:  # the database is away: the next beat tries again
                log.exception("inbox lease renewal failed")

    def _take_token(self, delivery_id: str) -> str | None:
        with self._claims_lock:
            return self._claims.pop(delivery_id, None)

    # -- writing -------------------------------------------------------------------------------

    def add(self, event: Event, body: bytes, *, now: float) -> bool:
        return self.add_many([(event, body, now)])[0]

    def add_many(self, items: list[tuple[Event, bytes, float]]) -> list[bool]:
        """One transaction. The pull requests' advisory locks are taken first (in one order, so
        two replicas' batches cannot deadlock on them): per pull request, arrival order (``seq``)
        is then commit order, and no claim of it runs in between."""
        keys = sorted({k for k in (order_key(e)[0] for e, _, _ in items) if k is not None})

        def unit(conn: psycopg.Connection) -> list[bool]:
            if keys:
                conn.execute(
                    "SELECT pg_advisory_xact_lock(%s, h) FROM "
                    "(SELECT DISTINCT hashtext(k) AS h FROM unnest(%s::text[]) k) x ORDER BY h",
                    (_KEY_LOCKS, keys),
                )
            return [_insert_one(conn, event, body, now) for event, body, now in items]

        return self._conns.run(unit)

    def claim(self, *, now: float) -> Delivery | None:
        token = uuid.uuid4().hex
        row = self._conns.run(lambda conn: _claim_unit(conn, now, self.owner, token, self.lease))
        if row is None:
            return None
        delivery = _row(row)
        with self._claims_lock:
            self._claims[delivery.id] = token
        return delivery

    def _finish(self, delivery_id: str, sets: str, args: tuple[Any, ...]) -> None:
        token = self._take_token(delivery_id)
        query = (
            f"UPDATE plangate_deliveries SET {sets}, claimed_by=NULL, claim_token=NULL, "
            "lease_until=NULL WHERE id=%s"
        )
        params: tuple[Any, ...] = (*args, delivery_id)
        if token is not None:
            query += " AND claim_token=%s"
            params = (*params, token)
        cur = self._conns.execute(query, params)
        if token is not None and cur.rowcount == 0:
            log.warning(
                "delivery %s: the claim's lease ran out and another replica took it; this "
                "outcome is not recorded",
                delivery_id,
            )

    def complete(self, delivery_id: str, *, now: float) -> None:
        self._finish(delivery_id, "status='done', finished_at=%s, last_error=NULL", (now,))

    def fail(self, delivery_id: str, error: str, *, retry_at: float | None, now: float) -> None:
        if retry_at is None:
            self._finish(
                delivery_id, "status='dead', last_error=%s, finished_at=%s", (error[:2000], now)
            )
        else:
            self._finish(
                delivery_id,
                "status='queued', last_error=%s, next_attempt_at=%s",
                (error[:2000], retry_at),
            )

    def resume(self, *, now: float | None = None) -> int:
        """Queue again the claims of replicas whose lease ran out; live replicas' are kept."""
        at = self._clock() if now is None else now
        cur = self._conns.execute(
            "UPDATE plangate_deliveries SET status='queued', claimed_by=NULL, claim_token=NULL, "
            "lease_until=NULL WHERE status='processing' AND lease_until <= %s",
            (at,),
        )
        return cur.rowcount

    def retry(self, delivery_id: str) -> bool:
        cur = self._conns.execute(
            "UPDATE plangate_deliveries SET status='queued', attempts=0, next_attempt_at=0, "
            "finished_at=NULL WHERE id=%s AND status<>'processing'",
            (delivery_id,),
        )
        return cur.rowcount == 1

    # -- reading -------------------------------------------------------------------------------

    def get(self, delivery_id: str) -> Delivery | None:
        row = self._conns.execute(
            f"SELECT {_COLUMNS} FROM plangate_deliveries WHERE id=%s", (delivery_id,)
        ).fetchone()
        return _row(row) if row else None

    def list(self, *, status: str | None = None, limit: int = 50) -> list[Delivery]:
        conn = self._conns
        if status:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM plangate_deliveries WHERE status=%s "
                "ORDER BY seq DESC LIMIT %s",
                (status, limit),
            ).fetchall()
        else:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM plangate_deliveries ORDER BY seq DESC LIMIT %s", (limit,)
            ).fetchall()
        return [_row(r) for r in rows]

    def dead_lettered(self, limit: int) -> list[DeadLetter]:
        return [
            DeadLetter(
                delivery_id=d.id,
                event=f"{d.event}.{d.action}" if d.action else d.event,
                attempts=d.attempts,
                last_error=d.last_error or "",
                at=datetime.fromtimestamp(d.finished_at or d.received_at, UTC),
            )
            for d in self.list(status="dead", limit=limit)
        ]

    def depth(self) -> int:
        row = self._conns.execute(
            "SELECT COUNT(*) FROM plangate_deliveries WHERE status IN ('queued','processing')"
        ).fetchone()
        return int(row[0]) if row else 0

    def counts(self) -> dict[str, int]:
        rows = self._conns.execute(
            "SELECT status, COUNT(*) FROM plangate_deliveries GROUP BY status"
        ).fetchall()
        return {str(s): int(n) for s, n in rows}

    def next_due(self) -> float | None:
        row = self._conns.execute(
            "SELECT MIN(next_attempt_at) FROM plangate_deliveries WHERE status='queued'"
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    # -- check runs and installations ----------------------------------------------------------

    def check_run_id(self, delivery_id: str, repo: str, head_sha: str, name: str) -> int | None:
        row = self._conns.execute(
            "SELECT check_run_id FROM plangate_check_runs WHERE delivery_id=%s AND repo=%s "
            "AND head_sha=%s AND name=%s",
            (delivery_id, repo, head_sha, name),
        ).fetchone()
        return int(row[0]) if row else None

    def has_check_runs(self, repo: str, head_sha: str) -> bool:
        row = self._conns.execute(
            "SELECT 1 FROM plangate_check_runs WHERE repo=%s AND head_sha=%s LIMIT 1",
            (repo, head_sha),
        ).fetchone()
        return row is not None

    def remember_check_run(
        self, delivery_id: str, repo: str, head_sha: str, name: str, check_run_id: int
    ) -> None:
        self._conns.execute(
            "INSERT INTO plangate_check_runs (delivery_id, repo, head_sha, name, check_run_id) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (delivery_id, repo, head_sha, name) "
            "DO UPDATE SET check_run_id=EXCLUDED.check_run_id",
            (delivery_id, repo, head_sha, name, check_run_id),
        )

    def record_installation(
        self, installation_id: int, *, account: str | None, status: str, now: float
    ) -> None:
        self._conns.execute(
            "INSERT INTO plangate_installations (id, account, status, updated_at) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET account=EXCLUDED.account, "
            "status=EXCLUDED.status, updated_at=EXCLUDED.updated_at",
            (installation_id, account, status, now),
        )
        self._installations[installation_id] = status

    def installation_status(self, installation_id: int) -> str | None:
        """From memory, refreshed from the database at most every ``installations_ttl`` s."""
        now = self._clock()
        if now - self._installations_at >= self._installations_ttl:
            try:
                rows = self._conns.execute(
                    "SELECT id, status FROM plangate_installations"
                ).fetchall()
            except psycopg.Error:  # keep the last view; storing the delivery will say more
                log.warning("cannot refresh installations from the database", exc_info=True)
            else:
                self._installations = {int(i): str(st) for i, st in rows}
                self._installations_at = now
        return self._installations.get(installation_id)

    def claim_once(self, key: str, *, now: float, every: float) -> bool:
        # one statement: the row lock makes concurrent claims of one key take turns, and the
        # loser's WHERE sees the winner's time
        row = self._conns.execute(
            "INSERT INTO plangate_claims (key, at) VALUES (%s, %s) ON CONFLICT (key) "
            "DO UPDATE SET at=EXCLUDED.at WHERE plangate_claims.at <= %s RETURNING key",
            (key, now, now - every),
        ).fetchone()
        return row is not None

    def release_claim(self, key: str, *, at: float) -> None:
        self._conns.execute("DELETE FROM plangate_claims WHERE key=%s AND at=%s", (key, at))


def _insert_one(conn: psycopg.Connection, event: Event, body: bytes, now: float) -> bool:
    key, head = order_key(event)
    row = conn.execute(
        "INSERT INTO plangate_deliveries (id, event, action, installation_id, repo, order_key, "
        "head_sha, body, received_at, next_attempt_at) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 0) ON CONFLICT (id) DO NOTHING RETURNING seq",
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
    ).fetchone()
    if row is None:
        return False
    seq = int(row[0])
    if key and head and event.name in SUPERSEDING_EVENTS and "#" in key:
        earlier = conn.execute(
            "SELECT id, body FROM plangate_deliveries WHERE order_key=%s "
            "AND event='pull_request' AND action='synchronize' AND head_sha<>%s AND seq<%s",
            (key, head, seq),
        ).fetchall()
        newer = moved_away_from(earlier, head)
        if newer is not None:  # a late delivery for an old head: it must not win
            conn.execute(
                "UPDATE plangate_deliveries SET status='superseded', finished_at=%s, "
                "last_error='superseded by delivery ' || %s WHERE seq=%s",
                (now, newer, seq),
            )
            return True
        conn.execute(
            "UPDATE plangate_deliveries SET status='superseded', finished_at=%s, "
            "last_error='superseded by delivery ' || %s "
            "WHERE order_key=%s AND status='queued' AND head_sha IS NOT NULL "
            "AND head_sha<>%s AND seq<%s",
            (now, event.delivery_id, key, head, seq),
        )
    return True


def _row(row: tuple[Any, ...]) -> Delivery:
    values = list(row)
    values[8] = bytes(values[8])  # BYTEA may come back as memoryview
    return Delivery(*values)
