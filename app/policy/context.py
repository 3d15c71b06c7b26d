"""What the policy engine knows about the world: passed in, never looked up.

``EvalContext`` carries the pull request's author, the changed paths (and who wrote them), the
time, and team spending so far through the ``SpendLedger`` port. The engine does no I/O: the
file-backed ledger reads its file once, when it is built at the edge (CLI, app, executor), and
answers queries from memory. The audit store will implement the same Protocol.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Literal, Protocol

from app.cost import Usage
from app.errors import InputError

__all__ = [
    "EvalContext",
    "FileSpendLedger",
    "NoSpend",
    "SpendLedger",
    "SpendRecord",
    "period_start",
]


class SpendLedger(Protocol):
    """Team spending so far. Implementations answer from memory; they must not raise for an
    unknown team (it has spent nothing) and must count records with ``start <= at < end``."""

    def spent(self, team: str, start: datetime, end: datetime) -> Usage: ...


class NoSpend:
    """A ledger with no records (every team has spent nothing)."""

    def spent(self, team: str, start: datetime, end: datetime) -> Usage:
        return Usage()


@dataclass(frozen=True, slots=True)
class SpendRecord:
    team: str
    at: datetime
    usage: Usage


class FileSpendLedger:
    """Spend records from a JSON Lines file: ``{"team", "at", "money", "tokens",
    "runner_minutes"}`` per line (``at`` in ISO 8601 with a zone; amounts as strings).

    The file is read once in ``from_path``; a malformed line is an ``InputError`` naming the
    file and line (a wrong ledger must not silently become "nothing spent").
    """

    def __init__(self, records: list[SpendRecord]) -> None:
        self._records = list(records)

    @classmethod
    def from_path(cls, path: str | Path, *, missing_ok: bool = True) -> FileSpendLedger:
        p = Path(path)
        if not p.exists():
            if missing_ok:
                return cls([])
            raise InputError(f"{p}: spend ledger does not exist")
        records: list[SpendRecord] = []
        for number, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                at = datetime.fromisoformat(row["at"])
                if at.tzinfo is None:
                    raise ValueError("'at' needs a time zone")
                usage = Usage(
                    money=Decimal(str(row.get("money", "0"))),
                    tokens=int(row.get("tokens", 0)),
                    runner_minutes=Decimal(str(row.get("runner_minutes", "0"))),
                )
                records.append(SpendRecord(str(row["team"]), at, usage))
            except (ValueError, KeyError, TypeError, InvalidOperation) as exc:
                raise InputError(
                    f"{p}:{number}: invalid spend record ({exc})",
                    hint='each line must be {"team": ..., "at": "2026-01-01T00:00:00Z", ...}',
                ) from exc
        return cls(records)

    def spent(self, team: str, start: datetime, end: datetime) -> Usage:
        total = Usage()
        for record in self._records:
            if record.team == team and start <= record.at < end:
                total = total + record.usage
        return total


def period_start(now: datetime, period: Literal["day", "week", "month"]) -> datetime:
    """Start of the calendar period (UTC) that contains ``now``; weeks start on Monday."""
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


@dataclass(frozen=True, slots=True)
class EvalContext:
    """The world of one evaluation.

    ``changed_paths`` are repository paths changed by the pull request (the plan's own path is
    added by the engine); ``change_authors`` maps a changed path to the logins of the commits
    that touched it (for separation of duties); ``run_usage`` is what this run has actually
    used so far (executor only).
    """

    now: datetime
    author: str | None = None
    plan_path: str | None = None
    changed_paths: tuple[str, ...] = ()
    change_authors: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    spend: SpendLedger = field(default_factory=NoSpend)
    run_usage: Usage | None = None

    def __post_init__(self) -> None:
        if self.now.tzinfo is None:
            raise ValueError("EvalContext.now must be timezone-aware")

    @property
    def paths(self) -> tuple[str, ...]:
        if self.plan_path and self.plan_path not in self.changed_paths:
            return (*self.changed_paths, self.plan_path)
        return self.changed_paths
