"""The executor's EventSink backed by an AuditStore: mapping, cost, durability, no raising."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from app.audit.errors import AuditError
from app.audit.events import Actor
from app.audit.git_store import GitAuditStore
from app.audit.query import AuditQuery
from app.audit.sink import AuditEventSink
from app.audit.store import InMemoryAuditStore
from app.dashboard.data import build_dashboard

DIGEST = "sha256:" + "cd" * 32
ACTOR = Actor(kind="workflow", id="octo/ops/.github/workflows/plangate-execute.yml@refs/heads/main")


class _Clock:
    def __init__(self) -> None:
        self.t = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.t += timedelta(seconds=1)
        return self.t


def _sink(store, **kw) -> AuditEventSink:
    return AuditEventSink(
        store,
        plan_id="db-migrate",
        plan_digest=DIGEST,
        team="payments",
        environment="prod",
        actor=ACTOR,
        now=_Clock(),
        **kw,
    )


def _run(sink: AuditEventSink) -> None:
    """Runner events with the field shapes app/execute/runner.py emits."""
    emit = sink.emit
    emit("run.requested", plan="db-migrate", digest=DIGEST, run_id="r-1")
    emit("lock.acquired", run_id="r-1", resources=["db/main"])
    emit("run.started", plan="db-migrate", digest=DIGEST, run_id="r-1", resumed=False, steps=2)
    emit("approval.verified", run_id="r-1", summary={"approvers": ["ana", "ben"]})
    emit("policy.allowed", run_id="r-1", step="migrate", reason="allowed")
    emit("step.started", run_id="r-1", step="migrate", action="shell", breaker="db")
    emit("attempt.started", run_id="r-1", step="migrate", phase="run", attempt=1)
    emit("step.retry", run_id="r-1", step="migrate", phase="run", after_attempt=1, delay=0.5)
    emit("breaker.state", breaker="db", old="closed", new="open")
    emit("breaker.state", breaker="db", old="open", new="half_open")
    emit("step.succeeded", run_id="r-1", step="migrate", attempts=2,
         usage={"money": Decimal("0.75"), "tokens_input": 10})  # fmt: skip
    emit("run.finished", run_id="r-1", plan="db-migrate", status="succeeded", reason=None)


def test_runner_events_become_audit_events():
    store = InMemoryAuditStore()
    sink = _sink(store)
    _run(sink)
    sink.flush()
    events = list(store.events())
    assert [e.type for e in events] == [
        "run.started",
        "approval.attested",
        "policy.decided",
        "step.started",
        "step.retried",
        "breaker.opened",
        "step.succeeded",
        "run.finished",
    ]
    assert {e.correlation_id for e in events} == {"r-1"}  # breaker events too
    assert all(e.plan_id == "db-migrate" and e.plan_digest == DIGEST for e in events)
    assert all(e.team == "payments" and e.environment == "prod" for e in events)
    assert events[1].payload["verified"] is True
    assert events[2].payload == {"reason": "allowed", "allowed": True}
    assert events[5].payload["service"] == "db"
    assert events[6].payload["cost_usd"] == "0.75"
    assert events[-1].payload["status"] == "succeeded"
    assert sink.unmapped == {"lock.acquired"}
    assert store.commits and store.pending == 0
    assert store.verify().ok
    # the dashboard reads the cost and the status back
    data = build_dashboard(events, now=events[-1].timestamp)
    assert data.runs[0].status == "succeeded"
    assert data.cost_by["team"][0].usd == Decimal("0.75")


def test_each_emit_is_durable_before_flush(tmp_path):
    import git

    git.Repo.init(tmp_path)
    store = GitAuditStore(tmp_path)
    sink = _sink(store)
    sink.emit("run.started", plan="db-migrate", digest=DIGEST, run_id="r-2", resumed=False)
    # no flush: a crash now still keeps the event (it is in the fsynced journal)
    fresh = GitAuditStore(tmp_path)
    assert [e.type for e in fresh.query(AuditQuery(correlation_id="r-2"))] == ["run.started"]


class _FlakyStore(InMemoryAuditStore):
    def __init__(self) -> None:
        super().__init__()
        self.fail = True

    def append(self, drafts):
        if self.fail:
            raise AuditError("disk full")
        return super().append(drafts)


def test_storage_trouble_never_breaks_the_run_and_loses_nothing():
    store = _FlakyStore()
    sink = _sink(store)
    sink.emit("run.started", plan="db-migrate", digest=DIGEST, run_id="r-3")  # does not raise
    sink.emit("step.started", run_id="r-3", step="migrate", action="shell")
    assert sink.pending_errors == ["disk full", "disk full"]
    store.fail = False
    sink.flush()
    assert [e.type for e in store.events()] == ["run.started", "step.started"]
