"""The dashboard's "pending plans" from the server's own evaluations.

Every evaluated plan pull request is recorded (plans with id/team/environment/digest, each
check's verdict) in ``DATA_DIR/evaluations.sqlite3``; ``plangate serve --audit-repo`` mounts the
dashboard with that log as its ``PendingPlanSource``. A pull request that is closed, or no longer
changes a plan, leaves the list.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi.testclient import TestClient
from ghfake import Pull
from srvkit import BASE, HEAD, REPO, create_app, make_deps, post, webhook_fixture

from app.audit.store import InMemoryAuditStore
from app.dashboard.router import create_dashboard_router
from app.server.evaluations import EvaluationLog


def _setup(settings):
    deps = make_deps(settings)
    deps.routers.append(
        create_dashboard_router(
            store=InMemoryAuditStore(),
            now=lambda: datetime.now(UTC),
            pending_source=deps.evaluations,
        )
    )
    return TestClient(create_app(settings, deps)), deps


def test_opened_plan_pr_is_pending_with_its_check_verdicts(settings, fake):
    client, deps = _setup(settings)
    post(client, "pull_request", webhook_fixture("pull_request.opened"))
    deps.worker.drain()
    (pending,) = deps.evaluations.pending_plans()
    assert pending.plan_id == "local-hello"
    assert (pending.team, pending.environment) == ("platform", "local")
    assert pending.plan_digest.startswith("sha256:")
    assert pending.pull_request == f"{REPO}#2" and pending.head_sha == HEAD
    published = {name: run["conclusion"] for name, run in fake.runs_for(HEAD).items()}
    assert dict(pending.checks) == published  # what GitHub shows, check by check
    # no engine configured: the approval check fails closed, and the dashboard says so
    assert pending.approval_status == "rejected"

    page = client.get("/").text
    assert "local-hello" in page and f"{REPO}#2" in page
    assert "validate: success" in page and "approval: failure" in page


def test_review_updates_the_verdicts(settings, fake):
    client, deps = _setup(settings)
    post(client, "pull_request", webhook_fixture("pull_request.opened"))
    deps.worker.drain()
    first = deps.evaluations.pending_plans()[0].proposed_at
    post(client, "pull_request_review", webhook_fixture("pull_request_review.submitted"))
    deps.worker.drain()
    (pending,) = deps.evaluations.pending_plans()
    assert pending.proposed_at == first  # first seen, kept across evaluations
    assert dict(pending.checks)["plangate/approval"] == "failure"


def test_closed_pr_leaves_the_list_without_calling_github(settings, fake):
    client, deps = _setup(settings)
    post(client, "pull_request", webhook_fixture("pull_request.opened"))
    deps.worker.drain()
    calls = len(fake.calls)
    closed = webhook_fixture("pull_request.opened")
    closed["action"] = "closed"
    closed["pull_request"]["state"] = "closed"
    assert post(client, "pull_request", closed).status_code == 202
    deps.worker.drain()
    assert deps.evaluations.pending_plans() == []
    assert len(fake.calls) == calls
    assert "no plans waiting" in client.get("/").text


def test_pr_that_no_longer_changes_a_plan_leaves_the_list(settings, fake):
    client, deps = _setup(settings)
    post(client, "pull_request", webhook_fixture("pull_request.opened"))
    deps.worker.drain()
    repo = fake.repo(REPO)
    head2 = repo.commit(dict(repo.commits[BASE]))  # the plan was taken out again
    repo.pulls[2] = Pull(2, head2, BASE, "master")
    sync = webhook_fixture("pull_request.opened")
    sync["action"] = "synchronize"
    sync["pull_request"]["head"]["sha"] = head2
    post(client, "pull_request", sync)
    deps.worker.drain()
    assert deps.evaluations.pending_plans() == []


def test_log_survives_a_restart(settings, fake):
    client, deps = _setup(settings)
    post(client, "pull_request", webhook_fixture("pull_request.opened"))
    deps.worker.drain()
    deps.evaluations.close()
    again = EvaluationLog.in_dir(settings.data_dir)
    assert [p.plan_id for p in again.pending_plans()] == ["local-hello"]
    again.close()
