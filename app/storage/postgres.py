"""psycopg 3 connections for the PostgreSQL stores: a small pool, schema set-up, retries.

Why a pool (``psycopg_pool``) and not a connection per thread: besides the worker threads, the
server answers ``/healthz`` and ``/metrics`` from a thread pool of up to 40 threads, and a
connection per thread would let one replica hold dozens of server connections. Each store keeps
at most ``max_size`` connections; a statement or a transaction checks one out for its duration.

Connections run in autocommit mode; multi-statement units use ``run(unit)``, one transaction
retried (bounded) when PostgreSQL aborted it for a deadlock or a serialization failure, so two
replicas colliding on the same rows never surface as an error to the caller. A unit that failed
because its connection was dead (the server restarted) is retried once on a fresh connection.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool

from app.errors import InputError

__all__ = ["Connections", "Result", "ensure_schema", "redact_url"]

T = TypeVar("T")

#: statements that may collide with another replica's: retried as a whole
_CONFLICTS = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)


def _connection_lost(exc: psycopg.OperationalError) -> bool:
    """The server went away (restart, idle timeout, failover), not a statement error."""
    state = exc.sqlstate
    return state is None or state.startswith("08") or state in {"57P01", "57P02", "57P03"}


def _with_retries(fn: Callable[[], T]) -> T:
    """Run ``fn``; again (bounded, jittered) after a deadlock or serialization failure, and once
    more after a lost connection (the pool has discarded it)."""
    lost = False
    for attempt in range(8):
        try:
            return fn()
        except _CONFLICTS:
            if attempt == 7:
                raise
            time.sleep(random.uniform(0.005, 0.05))
        except psycopg.OperationalError as exc:
            if lost or not _connection_lost(exc):
                raise
            lost = True
    raise AssertionError("unreachable")


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


@dataclass(frozen=True, slots=True)
class Result:
    """What a statement returned, read before its connection went back to the pool."""

    rows: list[tuple[Any, ...]]
    rowcount: int

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.rows


class Connections:
    """A pool of autocommit connections to ``url``; ``close`` closes them all."""

    def __init__(self, url: str, *, max_size: int = 8) -> None:
        if not url.startswith(("postgresql://", "postgres://")):
            raise InputError(
                f"PLANGATE_DATABASE_URL={redact_url(url)!r} is not a postgresql:// URL",
                hint="use postgresql://USER:PASSWORD@HOST:5432/DBNAME, or unset it for SQLite",
            )
        self.url = url
        _connect(url).close()  # fail at start-up with the server's reason, not on first use
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            kwargs={"autocommit": True, "connect_timeout": 10},
            open=False,
            name="plangate",
            timeout=10,  # waiting for a free connection (or for the server to come back)
        )
        self._pool.open(wait=True, timeout=30)

    def close(self) -> None:
        self._pool.close()

    def execute(self, query: str, params: Sequence[Any] | dict[str, Any] = ()) -> Result:
        """One statement on a pooled connection (autocommit: committed when it returns)."""

        def attempt() -> Result:
            with self._pool.connection() as conn:
                cur = conn.execute(query, params)  # type: ignore[call-overload]
                rows = cur.fetchall() if cur.description is not None else []
                return Result(rows, cur.rowcount)

        return _with_retries(attempt)

    def run(self, unit: Callable[[psycopg.Connection], T]) -> T:
        """``unit(conn)`` in one transaction, retried as a whole on deadlock/serialization."""

        def attempt() -> T:
            with self._pool.connection() as conn, conn.transaction():
                return unit(conn)

        return _with_retries(attempt)


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
