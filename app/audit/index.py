"""SQLite index over the audit trail: a cache for queries, rebuilt from git on demand (adapter).

Why: answering ``plangate audit list --plan X`` by re-reading every JSON line is linear in the
history; the index answers it from B-tree indexes. Git stays the source of truth: ``sync()``
compares the index's last (seq, hash) with the store and appends what is new, or rebuilds from
scratch when the store no longer contains that exact event (e.g. after a push re-chained local
events). Deleting the index file is always safe.

Must not: be trusted for verification (``verify`` reads git), or be written by anything but
``sync()``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from app.audit.events import AuditEvent, ChainHead
from app.audit.query import AuditQuery

__all__ = ["AuditIndex", "IndexSource"]

_SCHEMA_VERSION = "1"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    hash TEXT NOT NULL,
    type TEXT NOT NULL,
    ts INTEGER NOT NULL,
    actor TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    plan_id TEXT,
    step TEXT,
    team TEXT,
    environment TEXT,
    line TEXT NOT NULL
);
"""
#: secondary indexes; dropped during a full rebuild and created once after (much faster)
_INDEXES = {
    "events_plan": "plan_id, seq",
    "events_run": "correlation_id, seq",
    "events_actor": "actor, seq",
    "events_step": "step, seq",
    "events_type": "type, seq",
    "events_ts": "ts",
    "events_team": "team, seq",
    "events_env": "environment, seq",
}
_COLUMNS = {
    "plan_id": "plan_id",
    "correlation_id": "correlation_id",
    "actor": "actor",
    "step": "step",
    "team": "team",
    "environment": "environment",
}


class IndexSource(Protocol):
    """What the index needs from a store: its head and its records after a seq."""

    def head(self) -> ChainHead: ...

    def lines(self, after_seq: int = 0) -> Iterable[tuple[dict[str, Any], str]]: ...

    def record_at(self, seq: int) -> dict[str, Any] | None: ...


def _micros(value: str | datetime) -> int:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return int(value.timestamp() * 1_000_000)


class AuditIndex:
    """One SQLite file. Use as a context manager (closes the connection)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Used from the server's worker threads; callers serialise access (the git store holds
        # its thread lock around sync + query), so sharing one connection is safe.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._create_indexes()
        schema = self._meta("schema")
        if schema != _SCHEMA_VERSION:
            if schema is not None:
                self._db.executescript("DELETE FROM events; DELETE FROM meta;")
            self._set_meta("schema", _SCHEMA_VERSION)

    def __enter__(self) -> AuditIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def _create_indexes(self) -> None:
        for name, columns in _INDEXES.items():
            self._db.execute(f"CREATE INDEX IF NOT EXISTS {name} ON events ({columns})")

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def indexed_head(self) -> ChainHead:
        seq, digest = self._meta("last_seq"), self._meta("last_hash")
        return ChainHead(int(seq), digest) if seq and digest else ChainHead()

    def sync(self, source: IndexSource) -> int:
        """Bring the index up to ``source``; returns how many events were (re)indexed."""
        head = source.head()
        mine = self.indexed_head()
        if mine == head:
            return 0
        after = mine.seq
        if mine.seq:
            same = mine.seq <= head.seq and (
                (source.record_at(mine.seq) or {}).get("hash") == mine.hash
            )
            if not same:
                after = 0
        return self._load(source.lines(after), rebuild=after == 0)

    def _load(self, records: Iterable[tuple[dict[str, Any], str]], *, rebuild: bool) -> int:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            if rebuild:
                db.execute("DELETE FROM events")
                for name in _INDEXES:
                    db.execute(f"DROP INDEX IF EXISTS {name}")
            count, last = 0, None
            batch: list[tuple[Any, ...]] = []
            for d, line in records:
                actor = d.get("actor") or {}
                batch.append(
                    (
                        d["seq"],
                        d["hash"],
                        d["type"],
                        _micros(d["timestamp"]),
                        actor.get("id", ""),
                        d["correlation_id"],
                        d.get("plan_id"),
                        d.get("step"),
                        d.get("team"),
                        d.get("environment"),
                        line,
                    )
                )
                last = d
                if len(batch) >= 5000:
                    db.executemany(_INSERT, batch)
                    count += len(batch)
                    batch.clear()
            if batch:
                db.executemany(_INSERT, batch)
                count += len(batch)
            if last is not None:
                self._set_meta("last_seq", str(last["seq"]))
                self._set_meta("last_hash", str(last["hash"]))
            elif rebuild:
                self._set_meta("last_seq", "0")
                self._set_meta("last_hash", ChainHead().hash)
            if rebuild:
                self._create_indexes()
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return count

    def query(self, query: AuditQuery) -> list[AuditEvent]:
        where: list[str] = []
        args: list[Any] = []
        for field, column in _COLUMNS.items():
            value = getattr(query, field)
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if query.types:
            where.append(f"type IN ({','.join('?' * len(query.types))})")
            args.extend(query.types)
        if query.since is not None:
            where.append("ts >= ?")
            args.append(_micros(query.since))
        if query.until is not None:
            where.append("ts < ?")
            args.append(_micros(query.until))
        sql = "SELECT line FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC" if query.newest_first else " ORDER BY seq"
        if query.limit is not None:
            sql += " LIMIT ?"
            args.append(query.limit)
        rows = self._db.execute(sql, args).fetchall()
        # Lines come from git (or the journal) where they were canonicalised when written.
        context = {"canonical_checked": True}
        return [AuditEvent.model_validate_json(row[0], context=context) for row in rows]

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])


_INSERT = (
    "INSERT OR REPLACE INTO events (seq, hash, type, ts, actor, correlation_id, plan_id, step, "
    "team, environment, line) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
