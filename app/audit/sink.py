"""Runner events → audit events: the executor's ``EventSink`` port, backed by an ``AuditStore``.

Wiring (CLI / Actions entry point)::

    sink = AuditEventSink(store, plan=loaded.plan, plan_digest=loaded.digest,
                          actor=Actor(kind="workflow", id=workflow_ref),
                          now=lambda: datetime.now(UTC))
    runner = Runner(..., events=FanoutSink([sink, MetricsSink(...)]))

Each runner event of a lifecycle kind becomes one ``AuditEventDraft`` with ``correlation_id`` =
the run id, the plan's id, digest, team and environment, and the remaining fields as payload
(usage money becomes ``cost_usd``, which the dashboard sums). Progress-only events
(``attempt.*``, ``lock.waiting``, ``run.completed`` …) are not audited; ``IGNORED`` lists them.

``emit`` appends every ``batch`` events (default 1: each event is durable, i.e. journaled and
fsynced, when ``emit`` returns) and never raises for storage trouble: it logs, keeps the events
buffered and retries on the next ``emit``/``flush``. ``flush`` (end of every run) appends what is
left and commits once. ``pending_errors`` tells the caller something is wrong.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ValidationError

from app.audit.events import Actor, AuditEventDraft
from app.audit.store import AuditStore
from app.errors import PlangateError

__all__ = ["IGNORED", "MAPPING", "AuditEventSink"]

log = logging.getLogger(__name__)

#: runner event type → audit event type
MAPPING: Mapping[str, str] = {
    "run.started": "run.started",
    "run.finished": "run.finished",
    "step.started": "step.started",
    "step.succeeded": "step.succeeded",
    "step.failed": "step.failed",
    "step.retry": "step.retried",
    "run.promoted": "canary.passed",
    "canary.aborted": "canary.aborted",
    "incident.opened": "incident.opened",
    "compensation.started": "compensation.started",
    "compensation.succeeded": "compensation.succeeded",
    "compensation.failed": "compensation.failed",
    "budget.hard_limit": "budget.exceeded",
    "policy.allowed": "policy.decided",
    "policy.denied": "policy.decided",
    "approval.verified": "approval.attested",
    "approval.refused": "approval.attested",
}
#: progress-only runner events, not part of the audit trail
IGNORED = frozenset(
    {
        "attempt.started",
        "attempt.failed",
        "lock.waiting",
        "run.completed",
        "run.requested",
    }
)
_IDENTITY_FIELDS = frozenset({"run_id", "plan", "plan_id", "digest", "step"})


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


class AuditEventSink:
    """See the module docstring. Implements ``app.execute.ports.EventSink`` structurally."""

    def __init__(
        self,
        store: AuditStore,
        *,
        plan: BaseModel | None = None,
        plan_id: str | None = None,
        plan_digest: str | None = None,
        team: str | None = None,
        environment: str | None = None,
        actor: Actor,
        now: Callable[[], datetime],
        batch: int = 1,
        commit_message: str | None = None,
    ) -> None:
        self.store = store
        self.plan_id = plan_id or (getattr(plan, "id", None) if plan is not None else None)
        self.team = team or (getattr(plan, "team", None) if plan is not None else None)
        self.environment = environment or (
            getattr(plan, "environment", None) if plan is not None else None
        )
        self.plan_digest = plan_digest
        self.actor = actor
        self.now = now
        self.batch = max(1, batch)
        self.commit_message = commit_message
        self._buffer: list[AuditEventDraft] = []
        self.pending_errors: list[str] = []
        self.unmapped: set[str] = set()
        self._run_id: str | None = None

    def draft(self, event_type: str, fields: Mapping[str, Any]) -> AuditEventDraft | None:
        """The audit draft for one runner event (None if it is not audited)."""
        if fields.get("run_id"):
            # events without one (breaker changes) belong to the run in progress
            self._run_id = str(fields["run_id"])
        kind = MAPPING.get(event_type)
        if event_type == "breaker.state":
            new = str(fields.get("new", ""))
            kind = {"open": "breaker.opened", "closed": "breaker.closed"}.get(new)
        if kind is None:
            if event_type not in IGNORED and event_type != "breaker.state":
                self.unmapped.add(event_type)
            return None
        payload = {k: v for k, v in fields.items() if k not in _IDENTITY_FIELDS}
        if event_type == "breaker.state":
            payload["service"] = payload.pop("breaker", None)
        if event_type.startswith("policy."):
            payload["allowed"] = event_type == "policy.allowed"
        if event_type.startswith("approval."):
            payload["verified"] = event_type == "approval.verified"
        usage = payload.get("usage")
        if isinstance(usage, Mapping) and usage.get("money") not in (None, "0", 0):
            payload["cost_usd"] = str(usage["money"])
        run_id = self._run_id or "unknown-run"
        return AuditEventDraft(
            type=kind,  # type: ignore[arg-type]
            timestamp=self.now(),
            actor=self.actor,
            correlation_id=run_id,
            plan_id=self.plan_id or fields.get("plan") or fields.get("plan_id"),
            plan_digest=self.plan_digest or fields.get("digest"),
            step=fields.get("step"),
            team=self.team,
            environment=self.environment,
            payload=_jsonable(payload),
        )

    def emit(self, event_type: str, **fields: Any) -> None:
        try:
            draft = self.draft(event_type, fields)
        except ValidationError as exc:  # a bug upstream; never break the run over it
            log.error("audit: cannot record %s: %s", event_type, exc.errors()[0]["msg"])
            self.pending_errors.append(f"{event_type}: {exc.errors()[0]['msg']}")
            return
        if draft is None:
            return
        self._buffer.append(draft)
        if len(self._buffer) >= self.batch:
            self._append()

    def _append(self) -> bool:
        if not self._buffer:
            return True
        try:
            self.store.append(self._buffer)
        except (PlangateError, OSError) as exc:
            message = getattr(exc, "message", str(exc))
            log.error("audit: %d events not yet recorded: %s", len(self._buffer), message)
            self.pending_errors.append(message)
            return False
        self._buffer.clear()
        return True

    def flush(self) -> None:
        if not self._append():
            return
        try:
            self.store.commit(self.commit_message)
        except (PlangateError, OSError) as exc:
            # acknowledged events are safe in the journal; the next commit picks them up
            message = getattr(exc, "message", str(exc))
            log.error("audit: commit failed (events stay in the journal): %s", message)
            self.pending_errors.append(message)
