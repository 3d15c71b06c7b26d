"""Metrics: a dedicated registry, the text format for /metrics, a file for Actions artifacts."""

from __future__ import annotations

from decimal import Decimal

import git
from prometheus_client import REGISTRY as GLOBAL_REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from app.audit.events import Actor, AuditEventDraft
from app.audit.git_store import GitAuditStore
from app.observability import metrics
from app.observability.metrics import REGISTRY


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_metrics_live_on_a_dedicated_registry():
    assert REGISTRY is not GLOBAL_REGISTRY
    assert GLOBAL_REGISTRY.get_sample_value("plangate_runs_total", {}) is None


def test_render_is_parseable_text_format():
    metrics.DELIVERIES_RECEIVED.labels(event="pull_request").inc()
    metrics.INBOX_DEPTH.set(3)
    metrics.DELIVERY_PROCESSING_SECONDS.labels(event="pull_request").observe(0.2)
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    for expected in (
        "plangate_webhook_deliveries_received",
        "plangate_webhook_deliveries_dead_lettered",
        "plangate_webhook_inbox_depth",
        "plangate_webhook_processing_seconds",
        "plangate_github_api_calls",
        "plangate_github_rate_limit_remaining",
        "plangate_check_run_updates",
        "plangate_runs",
        "plangate_step_outcomes",
        "plangate_step_retries",
        "plangate_breaker_state",
        "plangate_canary_outcomes",
        "plangate_cost_usd",
        "plangate_tokens",
        "plangate_audit_events_appended",
    ):
        assert expected in names, expected


def test_breaker_state_and_usage_helpers():
    before = _value("plangate_breaker_transitions_total", service="github", state="open")
    metrics.set_breaker_state("github", "open")
    assert _value("plangate_breaker_state", service="github") == 2
    assert _value("plangate_breaker_transitions_total", service="github", state="open") == (
        before + 1
    )
    metrics.set_breaker_state("github", "closed")
    assert _value("plangate_breaker_state", service="github") == 0

    cost = _value("plangate_cost_usd_total", team="payments", environment="prod")
    metrics.record_usage(
        team="payments", environment="prod", money=Decimal("1.25"), tokens_input=100
    )
    assert _value("plangate_cost_usd_total", team="payments", environment="prod") == cost + 1.25
    assert _value("plangate_tokens_total", team="payments", environment="prod",
                  direction="input") >= 100  # fmt: skip


def test_write_textfile_for_actions_artifact(tmp_path):
    metrics.RUNS.labels(team="payments", environment="prod", status="succeeded").inc()
    path = tmp_path / "plangate.prom"
    metrics.write_textfile(path)
    text = path.read_text()
    assert 'plangate_runs_total{environment="prod",status="succeeded",team="payments"}' in text


def test_audit_store_feeds_metrics(tmp_path):
    git.Repo.init(tmp_path)
    store = GitAuditStore(tmp_path, batch_size=100)
    before = _value("plangate_audit_events_appended_total", type="incident.opened")
    commits = _value("plangate_audit_commits_total")
    from datetime import UTC, datetime

    store.append(
        [
            AuditEventDraft(
                type="incident.opened",
                timestamp=datetime(2026, 11, 25, tzinfo=UTC),
                actor=Actor(kind="system", id="executor"),
                correlation_id="run-1",
            )
        ]
    )
    assert _value("plangate_audit_events_appended_total", type="incident.opened") == before + 1
    assert _value("plangate_audit_journal_pending") == 1
    store.commit()
    assert _value("plangate_audit_commits_total") == commits + 1
    assert _value("plangate_audit_journal_pending") == 0
    assert store.verify().ok
    assert _value("plangate_audit_verify_ok") == 1
