"""POST /webhook: each rejection has its status code and leaves nothing stored or sent."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient
from srvkit import REPO, SECRET, create_app, make_deps, post, webhook_fixture

from app.server.webhooks import sign, verify_signature


def _client(settings, **kw):
    deps = make_deps(settings, **kw)
    return TestClient(create_app(settings, deps)), deps


def test_valid_delivery_is_stored_then_acknowledged(settings, fake):
    client, deps = _client(settings)
    r = post(client, "pull_request", webhook_fixture("pull_request.opened"), delivery="d-1")
    assert r.status_code == 202
    assert r.json()["status"] == "queued"
    stored = deps.inbox.get("d-1")
    assert stored is not None and stored.status == "queued"
    assert stored.order_key == f"{REPO}#2"
    assert fake.calls == []  # nothing sent before the worker runs


def test_bad_signature_rejected_without_side_effects(settings, fake):
    client, deps = _client(settings)
    body = json.dumps(webhook_fixture("pull_request.opened")).encode()
    r = post(client, "pull_request", body, signature=sign(b"wrong secret", body))
    assert r.status_code == 401
    assert deps.inbox.counts() == {}
    assert fake.calls == []


def test_missing_signature_rejected(settings, fake):
    client, deps = _client(settings)
    body = json.dumps(webhook_fixture("pull_request.opened")).encode()
    r = client.post(
        "/webhook",
        content=body,
        headers={"X-GitHub-Event": "pull_request", "X-GitHub-Delivery": "x"},
    )
    assert r.status_code == 401
    assert deps.inbox.counts() == {}


def test_signature_checked_before_parsing(settings, fake):
    """Garbage with a bad signature is a 401, not a 400: nothing is parsed before the HMAC."""
    client, _deps = _client(settings)
    r = post(client, "pull_request", b"{not json", signature="sha256=" + "0" * 64)
    assert r.status_code == 401


def test_tampered_body_rejected(settings, fake):
    client, deps = _client(settings)
    body = json.dumps(webhook_fixture("pull_request.opened")).encode()
    r = post(client, "pull_request", body + b" ", signature=sign(SECRET.encode(), body))
    assert r.status_code == 401
    assert deps.inbox.counts() == {}


def test_oversized_body_413(settings, fake):
    client, deps = _client(settings)
    deps.max_body_bytes = 1000
    body = json.dumps(webhook_fixture("pull_request.opened")).encode()
    assert len(body) > 1000
    r = post(client, "pull_request", body)
    assert r.status_code == 413
    assert deps.inbox.counts() == {}


def test_malformed_json_400(settings, fake):
    client, deps = _client(settings)
    r = post(client, "pull_request", b"{not json")
    assert r.status_code == 400
    assert deps.inbox.counts() == {}


def test_missing_delivery_header_400(settings, fake):
    client, deps = _client(settings)
    body = json.dumps(webhook_fixture("pull_request.opened")).encode()
    r = post(client, "pull_request", body, headers={"X-GitHub-Delivery": ""})
    assert r.status_code == 400
    assert deps.inbox.counts() == {}


def test_unknown_event_acknowledged_and_ignored(settings, fake):
    client, deps = _client(settings)
    r = post(client, "pull_request", webhook_fixture("pull_request.labeled"))
    assert r.status_code == 202 and r.json()["status"] == "ignored"
    r = post(client, "star", {"action": "created", "installation": {"id": 1}})
    assert r.status_code == 202 and r.json()["status"] == "ignored"
    assert deps.inbox.counts() == {}


def test_ping_answered(settings, fake):
    client, deps = _client(settings)
    r = post(client, "ping", webhook_fixture("ping"))
    assert r.status_code == 200 and r.json()["status"] == "pong"
    assert deps.inbox.counts() == {}


def test_uninstalled_repo_payload_ignored(settings, fake):
    """A payload without an installation (the App is not installed there): 202, not stored."""
    client, deps = _client(settings)
    payload = webhook_fixture("pull_request.opened")
    del payload["installation"]
    r = post(client, "pull_request", payload)
    assert r.status_code == 202 and r.json()["status"] == "ignored"
    assert deps.inbox.counts() == {}
    assert fake.calls == []


def test_deleted_installation_ignored_after_uninstall(settings, fake):
    client, deps = _client(settings)
    deps.inbox.record_installation(1, account="Codertocat", status="deleted", now=0)
    r = post(client, "pull_request", webhook_fixture("pull_request.opened"))
    assert r.status_code == 202 and r.json()["status"] == "ignored"
    assert deps.inbox.counts() == {}


def test_duplicate_delivery_acknowledged_once(settings, fake):
    client, deps = _client(settings)
    payload = webhook_fixture("pull_request.opened")
    assert post(client, "pull_request", payload, delivery="same").status_code == 202
    r = post(client, "pull_request", payload, delivery="same")
    assert r.status_code == 200 and r.json()["status"] == "duplicate"
    assert deps.inbox.counts() == {"queued": 1}


def test_healthz_reports_depth_and_worker(settings, fake):
    client, _deps = _client(settings)
    post(client, "pull_request", webhook_fixture("pull_request.opened"))
    body = client.get("/healthz").json()
    assert body["inbox_depth"] == 1
    assert body["worker_alive"] is False


def test_healthz_503_when_worker_should_run_but_is_dead(settings, fake):
    deps = make_deps(settings)
    deps.start_worker = True
    app = create_app(settings, deps)
    client = TestClient(app)  # no lifespan: the worker never started
    assert client.get("/healthz").status_code == 503


def test_metrics_prometheus_text(settings, fake):
    from app.observability.metrics import REGISTRY

    def value(name, **labels):
        return REGISTRY.get_sample_value(name, labels) or 0.0

    client, _deps = _client(settings)
    before = value("plangate_webhook_deliveries_received_total", event="pull_request")
    rejected = value("plangate_webhook_requests_total", result="bad_signature")
    post(client, "pull_request", webhook_fixture("pull_request.opened"))
    post(client, "pull_request", b"{}", signature="sha256=" + "0" * 64)
    text = client.get("/metrics").text
    assert "plangate_webhook_deliveries_received_total" in text
    assert value("plangate_webhook_deliveries_received_total", event="pull_request") == before + 1
    assert value("plangate_webhook_requests_total", result="bad_signature") == rejected + 1


def test_verify_signature_rejects_empty_secret_and_other_algorithms():
    body = b"{}"
    assert not verify_signature(b"", body, sign(b"", body))
    assert not verify_signature(b"k", body, "sha1=" + "0" * 40)
    assert verify_signature(b"k", body, sign(b"k", body))


def test_missing_secret_is_startup_error(settings):
    import pytest

    from app.errors import InputError

    bare = settings.model_copy(update={"github_webhook_secret": None})
    with pytest.raises(InputError, match="GITHUB_WEBHOOK_SECRET"):
        create_app(bare, make_deps(settings))


def test_metrics_inbox_gauge(settings, fake):
    client, _deps = _client(settings)
    post(client, "pull_request", webhook_fixture("pull_request.opened"))
    assert "plangate_webhook_inbox_depth 1.0" in client.get("/metrics").text


def test_manifest_matches_handled_events_and_least_privilege(repo_root, settings):
    manifest = json.loads((repo_root / "docs" / "github-app-manifest.json").read_text())
    deps = make_deps(settings)
    handled = {event for event, _action in deps.router._routes}
    always_delivered = {"installation", "installation_repositories"}
    # deployment_protection_rule is routed only when a signing key is configured
    with_signing = {"deployment_protection_rule"}
    assert set(manifest["default_events"]) == (handled - always_delivered) | with_signing
    # Least privilege, each write justified: check runs; the bot-only plangate-attestations
    # branch (a ruleset keeps it App-only); approving deployments (protection rule); actions:
    # dispatching the execute workflow (Retry) and cancelling its run (Cancel).
    assert manifest["default_permissions"] == {
        "actions": "write",
        "checks": "write",
        "contents": "write",
        "deployments": "write",
        "pull_requests": "read",
        "members": "read",
        "metadata": "read",
    }


def test_dashboard_mounted_shows_dead_letters(settings, fake):
    from datetime import UTC, datetime

    from app.audit.store import InMemoryAuditStore
    from app.dashboard.router import create_dashboard_router

    deps = make_deps(settings)
    deps.routers.append(
        create_dashboard_router(
            store=InMemoryAuditStore(),
            now=lambda: datetime(2026, 11, 25, tzinfo=UTC),
            dead_letters=deps.inbox,
        )
    )
    client = TestClient(create_app(settings, deps))
    post(client, "pull_request", webhook_fixture("pull_request.opened"), delivery="dead-1")
    deps.inbox.claim(now=1)
    deps.inbox.fail("dead-1", "GitHubUnavailable: 502", retry_at=None, now=2)
    (letter,) = deps.inbox.dead_lettered(10)
    assert (letter.delivery_id, letter.event) == ("dead-1", "pull_request.opened")
    page = client.get("/")
    assert page.status_code == 200 and "dead-1" in page.text
    assert client.post("/webhook", content=b"{}").status_code == 401  # webhook still first
