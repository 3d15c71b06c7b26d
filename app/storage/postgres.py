"""psycopg 3 connections for the PostgreSQL stores: one per thread, schema set-up, retries.

Why one connection per thread instead of a pool: each store is used by a handful of threads
(the webhook event loop, the worker threads, a lease heartbeat), every statement is short, and a
connection per thread keeps a transaction's statements on one connection without a checkout
protocol. A connection found broken (server restart, network cut) is replaced on next use.

Connections run in autocommit mode; multi-statement units use ``transaction(conn)`` which
retries (bounded) when PostgreSQL aborts them for a deadlock or a serialization failure, so two
replicas colliding on the same rows never surface as an error to the caller.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import errors as pg_errors
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_random

from app.errors import InputError

__all__ = ["Connections", "ensure_schema", "redact_url", "retry_conflicts"]

T = TypeVar("T")

#: statements that may collide with another replica's: retried as a whole
_CONFLICTS = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)

retry_conflicts = retry(
    retry=retry_if_exception_type(_CONFLICTS),
    stop=stop_after_attempt(8),
    wait=wait_random(0.005, 0.05),
    reraise=True,
)


def redact_url(url: str) -> str:
    """The URL without its password (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _connect(url: str) -> psycopg.Connection:
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise InputError(
            f"PLANGATE_DATABASE_URL={redact_url(url)}: cannot connect to PostgreSQL "
            f"({str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__})",
            hint="check the host, port, database name and credentials, and that the server "
            "accepts connections from this machine (pg_hba.conf)",
        ) from exc


class Connections:
    """One autocommit connection per thread to ``url``; ``close`` closes them all."""

    def __init__(self, url: str) -> None:
        if not url.startswith(("postgresql://", "postgres://")):
            raise InputError(
                f"PLANGATE_DATABASE_URL={redact_url(url)!r} is not a postgresql:// URL",
                hint="use postgresql://USER:PASSWORD@HOST:5432/DBNAME, or unset it for SQLite",
            )
        self.url = url
        self._local = threading.local()
        self._all: list[psycopg.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        self.get()  # fail at start-up, not on the first webhook

    def get(self) -> psycopg.Connection:
        conn: psycopg.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        if self._closed:
            raise RuntimeError("the store is closed")
        conn = _connect(self.url)
        self._local.conn = conn
        with self._lock:
            self._all = [c for c in self._all if not c.closed]
            self._all.append(conn)
        return conn

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection]:
        """One transaction on this thread's connection (commit on success, else rollback)."""
        conn = self.get()
        with conn.transaction():
            yield conn

    def run(self, unit: Callable[[psycopg.Connection], T]) -> T:
        """``unit(conn)`` in one transaction, retried as a whole on deadlock/serialization."""

        @retry_conflicts
        def attempt() -> T:
            with self.transaction() as conn:
                return unit(conn)

        return attempt()


def ensure_schema(
    conns: Connections, *, component: str, version: int, ddl: str, where: str
) -> None:
    """Create ``component``'s tables once; refuse a database written by a newer plangate.

    An advisory lock serializes replicas starting at once (``CREATE TABLE IF NOT EXISTS`` alone
    races on PostgreSQL's catalog).
    """

    def unit(conn: psycopg.Connection) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('plangate-schema'))")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS plangate_schema "
            "(component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
        )
        row = conn.execute(
            "SELECT version FROM plangate_schema WHERE component=%s", (component,)
        ).fetchone()
        if row is not None and int(row[0]) > version:
            raise InputError(
                f"{where}: the {component} schema has version {row[0]}; this plangate knows "
                f"{version}",
                hint="upgrade plangate, or point PLANGATE_DATABASE_URL at another database",
            )
        for statement in filter(str.strip, ddl.split(";")):
            conn.execute(statement)  # type: ignore[call-overload]
        conn.execute(
            "INSERT INTO plangate_schema (component, version) VALUES (%s, %s) "
            "ON CONFLICT (component) DO UPDATE SET version=EXCLUDED.version",
            (component, version),
        )

    conns.run(unit)
