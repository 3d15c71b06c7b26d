"""Prometheus metrics, on one dedicated ``CollectorRegistry`` (``REGISTRY``).

Why a dedicated registry: ``GET /metrics`` shows exactly Plangate's metrics (no accidental
duplicates from libraries using the global registry), tests can read values from it, and the
executor in Actions writes the same registry to a text file uploaded as a workflow artifact
(``write_textfile``).

Names follow Prometheus conventions (``plangate_`` prefix, ``_total`` counters, base units).
Labels are bounded sets only — event names, environments, teams, outcomes, service names —
never ids, SHAs or logins (cardinality). docs/operations.md lists every metric and the alerts
worth setting on them.

Must not: start an HTTP server or a push loop (the server mounts ``render()``), read the clock
itself for business decisions, or use the default global registry.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Literal

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    write_to_textfile,
)

__all__ = [
    "AUDIT_COMMITS",
    "AUDIT_EVENTS",
    "AUDIT_JOURNAL_PENDING",
    "AUDIT_VERIFY_OK",
    "BREAKER_STATE",
    "BREAKER_TRANSITIONS",
    "CANARY_OUTCOMES",
    "CHECK_RUN_UPDATES",
    "COST_USD",
    "DELIVERIES_DEAD_LETTERED",
    "DELIVERIES_FAILED",
    "DELIVERIES_PROCESSED",
    "DELIVERIES_RECEIVED",
    "DELIVERY_PROCESSING_SECONDS",
    "GITHUB_API_CALLS",
    "GITHUB_RATE_LIMIT_REMAINING",
    "INBOX_DEPTH",
    "REGISTRY",
    "RUNS",
    "RUN_DURATION_SECONDS",
    "STEP_OUTCOMES",
    "STEP_RETRIES",
    "TOKENS",
    "record_usage",
    "render",
    "set_breaker_state",
    "write_textfile",
]

REGISTRY = CollectorRegistry(auto_describe=True)

# -- webhook intake (server) -------------------------------------------------------------------
DELIVERIES_RECEIVED = Counter(
    "plangate_webhook_deliveries_received",
    "Webhook deliveries received with a valid signature, by GitHub event.",
    ["event"],
    registry=REGISTRY,
)
DELIVERIES_PROCESSED = Counter(
    "plangate_webhook_deliveries_processed",
    "Deliveries processed successfully, by GitHub event.",
    ["event"],
    registry=REGISTRY,
)
DELIVERIES_FAILED = Counter(
    "plangate_webhook_deliveries_failed",
    "Delivery processing attempts that failed (each attempt counts), by GitHub event.",
    ["event"],
    registry=REGISTRY,
)
DELIVERIES_DEAD_LETTERED = Counter(
    "plangate_webhook_deliveries_dead_lettered",
    "Deliveries given up on after all retries (need `plangate deliveries retry`).",
    ["event"],
    registry=REGISTRY,
)
INBOX_DEPTH = Gauge(
    "plangate_webhook_inbox_depth",
    "Deliveries stored but not yet processed.",
    registry=REGISTRY,
)
DELIVERY_PROCESSING_SECONDS = Histogram(
    "plangate_webhook_processing_seconds",
    "Time from receiving a delivery to finishing its processing.",
    ["event"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
    registry=REGISTRY,
)

# -- GitHub API ----------------------------------------------------------------------------------
GITHUB_API_CALLS = Counter(
    "plangate_github_api_calls",
    "GitHub REST calls, by HTTP method and status class (2xx, 4xx, 5xx, error).",
    ["method", "status"],
    registry=REGISTRY,
)
GITHUB_RATE_LIMIT_REMAINING = Gauge(
    "plangate_github_rate_limit_remaining",
    "Last seen x-ratelimit-remaining, by rate-limit resource (core, graphql, ...).",
    ["resource"],
    registry=REGISTRY,
)
CHECK_RUN_UPDATES = Counter(
    "plangate_check_run_updates",
    "Check runs created or updated, by check name and conclusion (or status).",
    ["check", "conclusion"],
    registry=REGISTRY,
)

# -- executor ----------------------------------------------------------------------------------
RUNS = Counter(
    "plangate_runs",
    "Plan runs finished, by team, environment and status.",
    ["team", "environment", "status"],
    registry=REGISTRY,
)
RUN_DURATION_SECONDS = Histogram(
    "plangate_run_duration_seconds",
    "Plan run duration, by environment.",
    ["environment"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200),
    registry=REGISTRY,
)
STEP_OUTCOMES = Counter(
    "plangate_step_outcomes",
    "Step attempts' final outcomes, by action and outcome (succeeded, failed, skipped, ...).",
    ["action", "outcome"],
    registry=REGISTRY,
)
STEP_RETRIES = Counter(
    "plangate_step_retries",
    "Step retries, by action.",
    ["action"],
    registry=REGISTRY,
)
BREAKER_STATE = Gauge(
    "plangate_breaker_state",
    "Circuit breaker state per service boundary: 0 closed, 1 half-open, 2 open.",
    ["service"],
    registry=REGISTRY,
)
BREAKER_TRANSITIONS = Counter(
    "plangate_breaker_transitions",
    "Circuit breaker state changes, by service and new state.",
    ["service", "state"],
    registry=REGISTRY,
)
CANARY_OUTCOMES = Counter(
    "plangate_canary_outcomes",
    "Canary stage results, by environment and outcome (passed, aborted).",
    ["environment", "outcome"],
    registry=REGISTRY,
)
COST_USD = Counter(
    "plangate_cost_usd",
    "Actual cost recorded by runs, in US dollars, by team and environment.",
    ["team", "environment"],
    registry=REGISTRY,
)
TOKENS = Counter(
    "plangate_tokens",
    "Model tokens used by runs, by team, environment and direction (input, output).",
    ["team", "environment", "direction"],
    registry=REGISTRY,
)

# -- audit trail -------------------------------------------------------------------------------
AUDIT_EVENTS = Counter(
    "plangate_audit_events_appended",
    "Audit events acknowledged (journaled), by event type.",
    ["type"],
    registry=REGISTRY,
)
AUDIT_COMMITS = Counter(
    "plangate_audit_commits",
    "Commits written to the audit ref.",
    registry=REGISTRY,
)
AUDIT_JOURNAL_PENDING = Gauge(
    "plangate_audit_journal_pending",
    "Acknowledged audit events not yet committed to git (after the last append or commit).",
    registry=REGISTRY,
)
AUDIT_VERIFY_OK = Gauge(
    "plangate_audit_verify_ok",
    "1 if the last audit verification passed, 0 if it found a break.",
    registry=REGISTRY,
)

_BREAKER_VALUES = {"closed": 0, "half-open": 1, "open": 2}


def set_breaker_state(service: str, state: Literal["closed", "half-open", "open"]) -> None:
    """Record a breaker transition (gauge + transition counter)."""
    BREAKER_STATE.labels(service=service).set(_BREAKER_VALUES[state])
    BREAKER_TRANSITIONS.labels(service=service, state=state).inc()


def record_usage(
    *,
    team: str,
    environment: str,
    money: Decimal | float = 0,
    tokens_input: int = 0,
    tokens_output: int = 0,
) -> None:
    """Add one step's actual usage to the cost and token counters."""
    if money:
        COST_USD.labels(team=team, environment=environment).inc(float(money))
    if tokens_input:
        TOKENS.labels(team=team, environment=environment, direction="input").inc(tokens_input)
    if tokens_output:
        TOKENS.labels(team=team, environment=environment, direction="output").inc(tokens_output)


def render() -> tuple[bytes, str]:
    """``(body, content type)`` for ``GET /metrics``."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def write_textfile(path: str | Path) -> None:
    """Write the registry in the text format (atomically), e.g. as an Actions artifact."""
    write_to_textfile(str(path), REGISTRY)
