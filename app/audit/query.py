"""Audit queries as values (pure core): what ``plangate audit list`` and the dashboard ask for.

One ``AuditQuery`` is answered the same way by every store: the in-memory store filters with
``AuditQuery.matches``; the git store answers from its SQLite index (``app.audit.index``), and
the shared contract tests check both give the same answers. All filters are ANDed; ``types``
matches any of the listed event types; ``since`` is inclusive and ``until`` exclusive.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from app.audit.events import AuditEvent, EventType

__all__ = ["AuditQuery"]


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("since/until must be timezone-aware (e.g. 2026-11-25T00:00:00Z)")
    return value.astimezone(UTC)


class AuditQuery(BaseModel):
    """Filters over audit events; results come back in chain order (ascending ``seq``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    plan_id: str | None = None
    correlation_id: str | None = None
    #: matches ``actor.id`` (a login, App slug or workflow identity)
    actor: str | None = None
    step: str | None = None
    types: tuple[EventType, ...] = ()
    since: Annotated[datetime | None, AfterValidator(_aware)] = None
    until: Annotated[datetime | None, AfterValidator(_aware)] = None
    team: str | None = None
    environment: str | None = None
    #: at most this many events; with ``newest_first`` the most recent ones
    limit: Annotated[int | None, Field(ge=1)] = None
    newest_first: bool = False

    def matches(self, event: AuditEvent) -> bool:
        """Whether one event passes every filter (``limit`` is applied by the caller)."""
        return (
            (self.plan_id is None or event.plan_id == self.plan_id)
            and (self.correlation_id is None or event.correlation_id == self.correlation_id)
            and (self.actor is None or event.actor.id == self.actor)
            and (self.step is None or event.step == self.step)
            and (not self.types or event.type in self.types)
            and (self.since is None or event.timestamp >= self.since)
            and (self.until is None or event.timestamp < self.until)
            and (self.team is None or event.team == self.team)
            and (self.environment is None or event.environment == self.environment)
        )

    def apply(self, events: list[AuditEvent]) -> list[AuditEvent]:
        """Filter, order and limit a list already in chain order."""
        found = [e for e in events if self.matches(e)]
        if self.newest_first:
            found.reverse()
        if self.limit is not None:
            found = found[: self.limit]
        return found
