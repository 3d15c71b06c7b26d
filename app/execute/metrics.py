"""Runner events → Prometheus metrics (``app.observability.metrics``), as an ``EventSink``.

The runner only emits events; this sink turns them into the shared registry's counters and
gauges (breaker state, step outcomes, retries, runs, canary outcomes, usage), so an open breaker
is visible in ``/metrics`` and in the textfile the Actions job uploads. Labels stay bounded:
action names, breaker keys (service boundaries), team, environment, statuses — never run or
step ids.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from app.observability import metrics as m

__all__ = ["MetricsSink"]

_OUTCOME_EVENTS = {
    "step.succeeded": "succeeded",
    "step.failed": "failed",
    "step.skipped": "skipped",
    "step.paused": "paused",
}


class MetricsSink:
    def __init__(self, *, team: str, environment: str, now: Callable[[], float]) -> None:
        self.team = team
        self.environment = environment
        self.now = now
        self._action: dict[str, str] = {}
        self._started: float | None = None

    def emit(self, event_type: str, **fields: Any) -> None:
        step = fields.get("step")
        if event_type == "run.started":
            self._started = self.now()
        elif event_type == "step.started":
            self._action[step] = fields.get("action", "unknown")
        elif event_type in _OUTCOME_EVENTS:
            action = self._action.get(step, "unknown")
            m.STEP_OUTCOMES.labels(action=action, outcome=_OUTCOME_EVENTS[event_type]).inc()
            usage = fields.get("usage") or {}
            if usage:
                m.record_usage(
                    team=self.team,
                    environment=self.environment,
                    money=Decimal(str(usage.get("money", "0"))),
                    tokens_input=int(usage.get("tokens_input", 0)),
                    tokens_output=int(usage.get("tokens_output", 0)),
                )
        elif event_type == "step.retry":
            m.STEP_RETRIES.labels(action=self._action.get(step, "unknown")).inc()
        elif event_type == "breaker.state":
            m.set_breaker_state(fields["breaker"], fields["new"].replace("_", "-"))
        elif event_type == "run.promoted":
            m.CANARY_OUTCOMES.labels(environment=self.environment, outcome="passed").inc()
        elif event_type == "canary.aborted":
            m.CANARY_OUTCOMES.labels(environment=self.environment, outcome="aborted").inc()
        elif event_type == "run.finished":
            m.RUNS.labels(
                team=self.team, environment=self.environment, status=fields.get("status")
            ).inc()
            if self._started is not None:
                m.RUN_DURATION_SECONDS.labels(environment=self.environment).observe(
                    max(0.0, self.now() - self._started)
                )

    def flush(self) -> None:
        pass
