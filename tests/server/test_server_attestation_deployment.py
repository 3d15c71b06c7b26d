"""Custom deployment protection rule: the environment is approved only with a verified
attestation for the merged pull request's plans (issue 6, item 7)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import responses
from fastapi.testclient import TestClient
from ghfake import Pull
from gitdata_fake import GitDataGitHub
from srvkit import BASE, HEAD, PLAN, REPO, ROOT, create_app, make_deps, post, webhook_fixture

from app.server.deployment import DeploymentGate
from app.server.engine import PolicyEngineEvaluator
from app.signing.local_key import LocalKeySigner, generate_private_key

POLICIES = {
    f"policies/{p.name}": p.read_bytes() for p in sorted((ROOT / "policies").glob("*.yaml"))
}
MERGE = "2" * 40
API = "https://ghes.example.com/api/v3"
CALLBACK = f"{API}/repos/{REPO}/actions/runs/77/deployment_protection_rule"


@pytest.fixture
def gh() -> Iterator[GitDataGitHub]:
    fake = GitDataGitHub(API)
    repo = fake.repo(REPO)
    repo.default_branch = "master"
    repo.commit({"README.md": "x", **POLICIES}, branch="master", sha=BASE)
    repo.commit(
        {"README.md": "x", **POLICIES, "plans/hello.yaml": PLAN}, branch="changes", sha=HEAD
    )
    repo.pulls[2] = Pull(2, HEAD, BASE, "master", author="alice")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake.install(rsps)
        yield fake
    assert fake.schema_errors == []  # every body sent matches GitHub's OpenAPI schema


def _deliver(settings, event, payload, signer):
    deps = make_deps(settings, evaluator=PolicyEngineEvaluator(), signer=signer)
    client = TestClient(create_app(settings, deps))
    assert post(client, event, payload).status_code == 202
    deps.worker.drain()
    return deps


def _approve_and_attest(settings, gh, signer):
    gh.repo(REPO).pulls[2].reviews.append(
        {
            "id": 11,
            "user": {"login": "bob"},
            "state": "APPROVED",
            "commit_id": HEAD,
            "submitted_at": "2026-11-25T01:00:00Z",
        }
    )
    review = webhook_fixture("pull_request_review.submitted")
    review["pull_request"]["user"]["login"] = "alice"
    _deliver(settings, "pull_request_review", review, signer)
    assert gh.runs_for(HEAD)["plangate/approval"]["conclusion"] == "success"


def _merge(gh, plan: bytes = PLAN):
    repo = gh.repo(REPO)
    repo.commit(
        {"README.md": "x", **POLICIES, "plans/hello.yaml": plan}, branch="master", sha=MERGE
    )
    repo.pulls[2].state = "closed"
    gh.merged[MERGE] = {
        "number": 2,
        "merged_at": "2026-11-25T02:00:00Z",
        "merge_commit_sha": MERGE,
        "head": {"sha": HEAD},
        "base": {"sha": BASE},
    }


def _request(callback: str = CALLBACK) -> dict:
    base = webhook_fixture("pull_request.opened")
    return {
        "action": "requested",
        "environment": "plangate-execute",
        "event": "push",
        "sha": MERGE,
        "ref": "refs/heads/master",
        "deployment_callback_url": callback,
        "deployment": {"sha": MERGE, "ref": "master"},
        "pull_requests": [],
        "repository": base["repository"],
        "installation": base["installation"],
        "sender": base["sender"],
    }


def test_deployment_approved_with_verified_attestation(settings, gh):
    signer = LocalKeySigner(generate_private_key())
    _approve_and_attest(settings, gh, signer)
    _merge(gh)
    _deliver(settings, "deployment_protection_rule", _request(), signer)
    ((run_id, body),) = gh.deployment_reviews
    assert run_id == 77
    assert body["state"] == "approved", body
    assert body["environment_name"] == "plangate-execute"
    assert "plans/hello.yaml" in body["comment"]


def test_deployment_rejected_without_attestation(settings, gh):
    _merge(gh)
    _deliver(
        settings, "deployment_protection_rule", _request(), LocalKeySigner(generate_private_key())
    )
    ((_, body),) = gh.deployment_reviews
    assert body["state"] == "rejected"
    assert "no approval attestation" in body["comment"]


def test_deployment_rejected_when_merged_plan_differs(settings, gh):
    signer = LocalKeySigner(generate_private_key())
    _approve_and_attest(settings, gh, signer)
    _merge(gh, plan=PLAN.replace(b"hello", b"hullo", 1))
    _deliver(settings, "deployment_protection_rule", _request(), signer)
    ((_, body),) = gh.deployment_reviews
    assert body["state"] == "rejected"
    assert "check 'digest' failed" in body["comment"]


def test_deployment_rejected_when_signed_by_untrusted_key(settings, gh):
    _approve_and_attest(settings, gh, LocalKeySigner(generate_private_key()))
    _merge(gh)
    # the server now runs with another key: the stored attestation's signer is not trusted
    _deliver(
        settings, "deployment_protection_rule", _request(), LocalKeySigner(generate_private_key())
    )
    ((_, body),) = gh.deployment_reviews
    assert body["state"] == "rejected"
    assert "check 'signer' failed" in body["comment"]
    assert "untrusted key" in body["comment"]


def test_deployment_rejected_without_merged_pull_request(settings, gh):
    gh.repo(REPO).commit({"README.md": "y"}, branch="master", sha=MERGE)
    signer = LocalKeySigner(generate_private_key())
    _deliver(settings, "deployment_protection_rule", _request(), signer)
    ((_, body),) = gh.deployment_reviews
    assert body["state"] == "rejected"
    assert "no merged pull request" in body["comment"]


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example.com/api/v3/repos/Codertocat/Hello-World/actions/runs/1/deployment_protection_rule",
        f"{API}/repos/other/repo/actions/runs/1/deployment_protection_rule",
        f"{API}/repos/{REPO}/actions/runs/1/deployment_protection_rule?x=1",
        f"{API}/repos/{REPO}/git/refs",
    ],
)
def test_callback_url_must_be_this_repositorys_run(url):
    gate = DeploymentGate(api_url=API, now=lambda: datetime.now(UTC))
    with pytest.raises(ValueError):
        gate.callback_path(REPO, url)
    assert gate.callback_path(REPO, CALLBACK) == (
        f"/repos/{REPO}/actions/runs/77/deployment_protection_rule"
    )


def test_forged_callback_is_never_called(settings, gh):
    _merge(gh)
    evil = "https://evil.example.com/api/v3/repos/x/y/actions/runs/1/deployment_protection_rule"
    signer = LocalKeySigner(generate_private_key())
    deps = _deliver(settings, "deployment_protection_rule", _request(evil), signer)
    assert gh.deployment_reviews == []
    assert deps.inbox.counts() == {"dead": 1}


def test_without_signing_key_the_event_is_not_handled(settings, gh):
    """No attestations configured: the request is ignored and the deployment stays pending
    (GitHub never sees an approval), not approved."""
    _merge(gh)
    deps = make_deps(settings, evaluator=PolicyEngineEvaluator())
    client = TestClient(create_app(settings, deps))
    response = post(client, "deployment_protection_rule", _request())
    assert response.json()["status"] == "ignored"
    deps.worker.drain()
    assert gh.deployment_reviews == []


def test_deployment_reads_the_base_policies_in_one_query(settings, gh):
    # the six policy files come from one GraphQL query with blob-SHA-checked texts, not a REST
    # tree walk plus one blob read per file: measured 16 REST calls before, 8 REST + 1 GraphQL
    signer = LocalKeySigner(generate_private_key())
    _approve_and_attest(settings, gh, signer)
    _merge(gh)
    before = len(gh.calls)
    _deliver(settings, "deployment_protection_rule", _request(), signer)
    ((_, body),) = gh.deployment_reviews
    assert body["state"] == "approved", body
    calls = gh.calls[before:]
    rest = [c for c in calls if c.path != "/graphql"]
    assert len(calls) - len(rest) == 1
    assert [c.path for c in rest if "/git/trees/" in c.path or "/git/blobs/" in c.path] == []
    assert len(rest) == 8, [(c.method, c.path) for c in rest]


def test_deployment_policies_fall_back_to_rest_without_graphql(settings, gh):
    signer = LocalKeySigner(generate_private_key())
    _approve_and_attest(settings, gh, signer)
    _merge(gh)
    gh.graphql_enabled = False
    _deliver(settings, "deployment_protection_rule", _request(), signer)
    ((_, body),) = gh.deployment_reviews
    assert body["state"] == "approved", body
