"""Check runs GitHub created but Plangate could not confirm are adopted, never duplicated.

Two windows: a create answered with a 5xx (or a dropped connection) after GitHub applied it,
retried inline by the adapter; and a process killed between GitHub's answer and the inbox
write, resumed by the worker (the SIGKILL variant runs a real server in
tests/faults/test_faults_serve_kill.py). Either way the run is found by its deterministic
``external_id`` among *this App's* runs on the head SHA (``checks/list-for-ref``).
"""

from __future__ import annotations

import json

from fastapi.testclient import TestClient
from srvkit import HEAD, REPO, create_app, make_deps, post, webhook_fixture

from app.github.client import PullRequestInfo
from app.server.evaluate import check_external_id

NAMES = {"plangate/validate", "plangate/policy", "plangate/cost", "plangate/approval"}
PULL = PullRequestInfo(2, "Codertocat", HEAD, "f" * 40, "master")


def _lose_answer_of_first_create(fake, name: str) -> dict:
    """GitHub applies the first POST of check run ``name`` but answers 502."""
    state = {"lost": 0}
    original = fake.handle

    def handle(method, url, headers, body):
        status, hdrs, payload = original(method, url, headers, body)
        if (
            method == "POST"
            and url.endswith("/check-runs")
            and json.loads(body)["name"] == name
            and not state["lost"]
        ):
            state["lost"] += 1
            return 502, {"Content-Type": "application/json"}, '{"message": "Server Error"}'
        return status, hdrs, payload

    fake.handle = handle
    return state


def test_create_answered_502_after_applied_is_adopted_not_duplicated(settings, fake):
    state = _lose_answer_of_first_create(fake, "plangate/cost")
    client = TestClient(create_app(settings, deps := make_deps(settings)))
    assert post(client, "pull_request", webhook_fixture("pull_request.opened")).status_code == 202
    assert deps.worker.drain() == 1
    assert state["lost"] == 1
    created = sorted(r["name"] for r in fake.check_runs.values())
    assert created == sorted(NAMES)  # one run per name: the lost create was found, not repeated
    assert len(fake.calls_to("GET", rf"/commits/{HEAD}/check-runs$")) == 1
    assert deps.inbox.counts() == {"done": 1}


def test_first_attempt_never_lists_check_runs(settings, fake):
    """The look-up costs a request only after a failure: the common path stays at its count."""
    client = TestClient(create_app(settings, deps := make_deps(settings)))
    post(client, "pull_request", webhook_fixture("pull_request.opened"))
    deps.worker.drain()
    assert set(fake.runs_for(HEAD)) == NAMES
    assert fake.calls_to("GET", r"/check-runs$") == []


def test_resumed_delivery_adopts_the_run_it_created_before_the_crash(settings, fake):
    """Killed after GitHub created ``plangate/validate``, before the inbox remembered its id."""
    client = TestClient(create_app(settings, deps := make_deps(settings)))
    post(client, "pull_request", webhook_fixture("pull_request.opened"), delivery="d-1")
    delivery = deps.inbox.claim(now=0)  # attempt 1 starts...
    assert delivery is not None and delivery.id == "d-1"
    # ...and GitHub creates its first run, then the process dies (run id never stored)
    fake.check_runs[1] = {
        "id": 1,
        "name": "plangate/validate",
        "head_sha": HEAD,
        "status": "in_progress",
        "external_id": check_external_id(REPO, PULL, "plangate/validate", "d-1"),
        "app": {"id": 42},
        "annotations": [],
    }
    deps2 = make_deps(settings)
    assert deps2.inbox.resume() == 1
    assert deps2.worker.drain() == 1
    runs = fake.runs_for(HEAD)
    assert set(runs) == NAMES
    assert len(fake.check_runs) == 4  # the orphan was updated, three were created
    assert runs["plangate/validate"]["id"] == 1
    assert runs["plangate/validate"]["status"] == "completed"
    # the adopted id is remembered: a further retry updates it too
    assert deps2.inbox.check_run_id("d-1", REPO, HEAD, "plangate/validate") == 1


def test_other_apps_run_with_the_same_external_id_is_not_adopted(settings, fake):
    """Only this App's runs are candidates (another App cannot hand us its run)."""
    client = TestClient(create_app(settings, deps := make_deps(settings)))
    post(client, "pull_request", webhook_fixture("pull_request.opened"), delivery="d-2")
    deps.inbox.claim(now=0)
    fake.check_runs[1] = {
        "id": 1,
        "name": "plangate/validate",
        "head_sha": HEAD,
        "status": "completed",
        "conclusion": "success",
        "external_id": check_external_id(REPO, PULL, "plangate/validate", "d-2"),
        "app": {"id": 99},
        "annotations": [],
    }
    deps2 = make_deps(settings)
    deps2.inbox.resume()
    assert deps2.worker.drain() == 1
    runs = fake.runs_for(HEAD)
    assert runs["plangate/validate"]["id"] != 1
    assert runs["plangate/validate"]["app"] == {"id": 42}
    assert fake.check_runs[1]["app"] == {"id": 99}  # untouched


def test_external_id_is_deterministic_and_distinct():
    a = check_external_id(REPO, PULL, "plangate/policy", "d")
    assert a == check_external_id(REPO, PULL, "plangate/policy", "d")
    assert a != check_external_id(REPO, PULL, "plangate/cost", "d")
    assert a != check_external_id(REPO, PULL, "plangate/policy", "e")
    assert len(a) <= 255 and a.startswith("plangate:")
