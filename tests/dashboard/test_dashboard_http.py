"""Dashboard over HTTP (FastAPI TestClient): content, run page, access control, escaping."""

from __future__ import annotations

import base64
import re
from datetime import timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.audit.events import Actor, AuditEventDraft
from app.audit.store import InMemoryAuditStore
from app.dashboard.data import build_dashboard
from app.dashboard.demo import DEMO_NOW, demo_dead_letters, demo_store
from app.dashboard.html import cost_chart
from app.dashboard.router import create_dashboard_router


def _client(*, token=None, client=("testclient", 5000), store=None, dead=True) -> TestClient:
    app = FastAPI()
    app.include_router(
        create_dashboard_router(
            store=store or demo_store(),
            now=lambda: DEMO_NOW,
            token=token,
            dead_letters=demo_dead_letters() if dead else None,
        )
    )
    return TestClient(app, client=client)


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_main_page_shows_every_section():
    response = _client().get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    text = _text(response.text)
    # pending plan with approval status and count
    assert re.search(r"dns-cutover .*octo/ops#57 .*ana .*pending 1/2", text)
    # recent runs with status
    assert re.search(r"run-91d2 canary-rollout prod aborted", text)
    assert re.search(r"run-80c1 cache-flush prod failed", text)
    assert re.search(r"run-7f3a db-migrate prod succeeded", text)
    assert "flush-eu" in text and "HTTP 503 from cdn.example.net" in text  # failing step
    assert re.search(r"search-api open", text)  # open breaker
    assert re.search(r"run-91d2 canary-rollout prod aborted .*metric=error_rate", text)
    assert "pull_request_review.submitted" in text  # dead letter
    assert "<svg" in response.text and "payments $" in text  # cost chart with legend
    assert "<script" not in response.text  # works without JavaScript


def test_cost_chart_dimension_switch():
    by_plan = _text(_client().get("/", params={"cost_by": "plan"}).text)
    assert "db-migrate $" in by_plan and "search-reindex $" in by_plan
    by_env = _text(_client().get("/", params={"cost_by": "environment"}).text)
    assert "prod $" in by_env and "staging $" in by_env
    assert "payments $" in _text(_client().get("/", params={"cost_by": "bogus"}).text)


def test_run_page_has_the_step_timeline():
    response = _client().get("/runs/run-80c1")
    assert response.status_code == 200
    text = _text(response.text)
    assert re.search(r"Run run-80c1", text)
    assert re.search(r"cache-flush .* infra prod failed", text)
    order = [text.index(s) for s in ("run.started", "retried", "warm-eu", "run.finished")]
    assert order == sorted(order)
    assert "+71.0s" in text


def test_unknown_run_is_404():
    response = _client().get("/runs/nope")
    assert response.status_code == 404
    assert "no audit events for run" in response.text


def test_dead_letters_without_a_source():
    assert "no delivery inbox connected" in _client(dead=False).get("/").text


def test_token_required_when_configured():
    client = _client(token="t0k3n-for-dashboard")
    denied = client.get("/")
    assert denied.status_code == 401
    assert denied.headers["www-authenticate"].startswith("Basic")
    assert client.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = client.get("/", headers={"Authorization": "Bearer t0k3n-for-dashboard"})
    assert ok.status_code == 200
    basic = base64.b64encode(b"anyone:t0k3n-for-dashboard").decode()
    assert client.get("/", headers={"Authorization": f"Basic {basic}"}).status_code == 200
    assert client.get("/runs/run-80c1").status_code == 401


def test_dashboard_refuses_remote_clients_without_a_token():
    remote = _client(client=("203.0.113.9", 40000))
    response = remote.get("/")
    assert response.status_code == 403
    assert "localhost only" in response.text
    local = _client(client=("127.0.0.1", 40000))
    assert local.get("/").status_code == 200
    with_token = _client(token="t0k3n-for-dashboard", client=("203.0.113.9", 40000))
    assert (
        with_token.get("/", headers={"Authorization": "Bearer t0k3n-for-dashboard"}).status_code
        == 200
    )


def test_event_values_are_escaped():
    store = InMemoryAuditStore()
    store.append(
        [
            AuditEventDraft(
                type="run.started",
                timestamp=DEMO_NOW - timedelta(minutes=5),
                actor=Actor(kind="user", id="<img src=x onerror=alert(1)>"),
                correlation_id="run-x",
                plan_id="p1",
            ),
            AuditEventDraft(
                type="step.failed",
                timestamp=DEMO_NOW - timedelta(minutes=4),
                actor=Actor(kind="app", id="plangate"),
                correlation_id="run-x",
                plan_id="p1",
                step="s1",
                payload={"error": "<script>alert('x')</script>"},
            ),
        ]
    )
    for path in ("/", "/runs/run-x"):
        body = _client(store=store).get(path).text
        assert "<script>alert" not in body and "<img src=x" not in body
        assert "&lt;" in body


def test_build_dashboard_is_pure_and_bounded():
    store = demo_store()
    events = list(store.events())
    data = build_dashboard(events, now=DEMO_NOW, max_runs=5)
    assert len(data.runs) == 5
    assert [r.correlation_id for r in data.runs[:3]] == ["run-91d2", "run-80c1", "run-7f3a"]
    assert data.dead_letters is None
    assert [b.service for b in data.open_breakers] == ["search-api"]
    # a later breaker.closed closes it
    closed = [*events]
    from app.audit.events import ChainHead, chain

    closed += chain(
        [
            AuditEventDraft(
                type="breaker.closed",
                timestamp=DEMO_NOW,
                actor=Actor(kind="system", id="executor"),
                correlation_id="run-91d2",
                payload={"service": "search-api"},
            )
        ],
        ChainHead(events[-1].seq, events[-1].hash),
    )
    assert build_dashboard(closed, now=DEMO_NOW).open_breakers == []


@pytest.mark.parametrize("points", [[]])
def test_empty_cost_chart(points):
    assert "no cost recorded" in cost_chart(points, now=DEMO_NOW)


def test_dashboard_on_the_git_store(tmp_path):
    import git

    from app.audit.git_store import GitAuditStore

    git.Repo.init(tmp_path)
    store = GitAuditStore(tmp_path)
    demo = list(demo_store().events())
    fields = set(AuditEventDraft.model_fields)
    store.append([AuditEventDraft(**{k: getattr(e, k) for k in fields}) for e in demo])
    store.commit()
    client = _client(store=store)
    for _ in range(3):  # several requests, served from different worker threads
        assert "run-80c1" in client.get("/").text
    assert "flush-eu" in client.get("/runs/run-80c1").text
    store.close()
