"""The real evaluator (policy engine, cost, approval gate) behind the webhook pipeline."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from ghfake import Pull
from srvkit import BASE, HEAD, PLAN, REPO, ROOT, create_app, make_deps, post, webhook_fixture

from app.server.engine import PolicyEngineEvaluator

POLICIES = {
    f"policies/{p.name}": p.read_bytes() for p in sorted((ROOT / "policies").glob("*.yaml"))
}


def _world(fake, *, author: str, plan: bytes = PLAN, policies=None):
    repo = fake.repo(REPO)
    files = dict(policies or POLICIES)
    repo.commit({"README.md": "x", **files}, branch="master", sha=BASE)
    repo.commit({"README.md": "x", **files, "plans/hello.yaml": plan}, sha=HEAD)
    repo.pulls[2] = Pull(2, HEAD, BASE, "master", author=author)
    payload = webhook_fixture("pull_request.opened")
    payload["pull_request"]["user"]["login"] = author
    return payload


def _run(settings, payload, event="pull_request"):
    deps = make_deps(settings, evaluator=PolicyEngineEvaluator())
    client = TestClient(create_app(settings, deps))
    assert post(client, event, payload).status_code == 202
    deps.worker.drain()
    return deps


def test_team_member_plan_allowed_with_cost_and_pending_approval(settings, fake):
    payload = _world(fake, author="alice")
    _run(settings, payload)
    runs = fake.runs_for(HEAD)
    policy = runs["plangate/policy"]
    assert policy["conclusion"] == "success", policy["output"]["summary"]
    assert "sha256:" in policy["output"]["summary"]
    assert "### Rule decisions" in policy["output"]["summary"]
    cost = runs["plangate/cost"]
    assert cost["conclusion"] in ("success", "neutral")
    assert "| `plans/hello.yaml` |" in cost["output"]["summary"]
    approval = runs["plangate/approval"]
    assert approval["conclusion"] == "action_required"  # nobody approved yet
    assert fake.schema_errors == []


def test_author_outside_queue_owners_fails_policy(settings, fake):
    payload = _world(fake, author="mallory")
    _run(settings, payload)
    policy = fake.runs_for(HEAD)["plangate/policy"]
    assert policy["conclusion"] == "failure"
    assert "mallory may not enqueue" in policy["output"]["summary"]
    assert any("enqueue" in a["message"] for a in policy["annotations"])


def test_broken_base_policy_fails_closed(settings, fake):
    payload = _world(fake, author="alice", policies={"policies/teams.yaml": b"teams: [\n"})
    _run(settings, payload)
    runs = fake.runs_for(HEAD)
    assert runs["plangate/validate"]["conclusion"] == "success"
    for name in ("plangate/policy", "plangate/cost", "plangate/approval"):
        assert runs[name]["conclusion"] == "failure"
        assert "policies/teams.yaml" in runs[name]["output"]["summary"]


def test_missing_policies_fail_closed(settings, fake):
    payload = _world(fake, author="alice", policies={"policies/README.md": b"nothing\n"})
    _run(settings, payload)
    runs = fake.runs_for(HEAD)
    for name in ("plangate/policy", "plangate/cost", "plangate/approval"):
        assert runs[name]["conclusion"] == "failure"


def test_calls_for_opened_with_engine_within_budget(settings, fake):
    payload = _world(fake, author="alice")
    _run(settings, payload)
    assert len(fake.calls) <= 10 + len(POLICIES) - 1  # one blob per policy file, first time


def test_approval_by_team_member_on_head_counts_in_gate(settings, fake):
    _world(fake, author="alice")
    fake.repo(REPO).pulls[2].reviews = [
        {
            "id": 11,
            "user": {"login": "bob"},
            "state": "APPROVED",
            "commit_id": HEAD,
            "submitted_at": "2026-11-25T01:00:00Z",
        }
    ]
    review = webhook_fixture("pull_request_review.submitted")
    review["pull_request"]["user"]["login"] = "alice"
    _run(settings, review, event="pull_request_review")
    approval = fake.runs_for(HEAD)["plangate/approval"]
    assert "bob" in approval["output"]["summary"]
    assert fake.schema_errors == []


def test_review_calls_with_real_gate(settings, fake):
    deps = make_deps(settings, evaluator=PolicyEngineEvaluator())
    client = TestClient(create_app(settings, deps))
    post(client, "pull_request", _world(fake, author="alice"))
    deps.worker.drain()
    fake.repo(REPO).pulls[2].reviews = [
        {
            "id": 11,
            "user": {"login": "bob"},
            "state": "APPROVED",
            "commit_id": HEAD,
            "submitted_at": "2026-11-25T01:00:00Z",
        }
    ]
    review = webhook_fixture("pull_request_review.submitted")
    review["pull_request"]["user"]["login"] = "alice"
    counts = []
    for _ in range(2):
        before = len(fake.calls)
        post(client, "pull_request_review", review)
        deps.worker.drain()
        counts.append(len(fake.calls) - before)
    # reviews with the commits (one GraphQL query; the reviews list alone once commits are
    # cached), bob's permission, the approval check
    assert counts == [3, 3]
    assert "@bob" in fake.runs_for(HEAD)["plangate/approval"]["output"]["summary"]


@pytest.mark.parametrize("graphql", [True, False])
def test_commit_author_cannot_approve_whichever_way_commits_are_read(settings, fake, graphql):
    """bob wrote a commit of the pull request: his approval does not count, whether the
    commits came with the reviews (one GraphQL query) or from the REST list."""
    fake.graphql_enabled = graphql  # off: policies/ and commits by REST
    deps = make_deps(settings, evaluator=PolicyEngineEvaluator())
    client = TestClient(create_app(settings, deps))
    post(client, "pull_request", _world(fake, author="alice"))
    deps.worker.drain()
    pull = fake.repo(REPO).pulls[2]
    pull.commit_author = "bob"
    pull.reviews = [
        {
            "id": 11,
            "user": {"login": "bob"},
            "state": "APPROVED",
            "commit_id": HEAD,
            "submitted_at": "2026-11-25T01:00:00Z",
        }
    ]
    review = webhook_fixture("pull_request_review.submitted")
    review["pull_request"]["user"]["login"] = "alice"
    post(client, "pull_request_review", review)
    deps.worker.drain()
    approval = fake.runs_for(HEAD)["plangate/approval"]
    assert approval["conclusion"] == "action_required"
    assert "0 of 1" in approval["output"]["title"]
    assert bool(fake.calls_to("GET", r"/pulls/2/commits$")) is not graphql
