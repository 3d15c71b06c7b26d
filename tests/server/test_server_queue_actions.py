"""Retry / Cancel on ``plangate/execute``: ``check_run.requested_action`` is a queue request.

The payload is ``@octokit/webhooks-examples``' ``check_run.requested_action`` (PROVENANCE.md)
pointed at our repository and check run; GitHub is ``QueueGitHub`` (``ghfake`` + git data +
the Actions dispatch/cancel endpoints) behind ``responses``, every body validated against
``@octokit/openapi``. Policies are the shipped ones: team platform's plans may be retried by
platform and sre members, cancelled also by security (``policies/teams.yaml``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import responses
from fastapi.testclient import TestClient
from ghfake import Pull
from queue_fake import QueueGitHub
from srvkit import BASE, HEAD, PLAN, REPO, ROOT, create_app, make_deps, post, webhook_fixture

from app.execute.queue import QueueRequest, execute_external_id, request_id_for
from app.plan.loader import load_plan_bytes
from app.server.app import app_clients
from app.server.queue_actions import QueueActions
from app.server.webhooks import Event

API = "https://ghes.example.com/api/v3"
POLICIES = {
    f"policies/{p.name}": p.read_bytes() for p in sorted((ROOT / "policies").glob("*.yaml"))
}
MERGE = "3" * 40
BRANCH = "plangate-attestations"
CHECK_RUN = 900
WORKFLOW_RUN = 555
DIGEST = load_plan_bytes("plans/hello.yaml", PLAN).digest
#: erin (payments) may do neither on team platform's plans; judy (security) may cancel only
LOOSE = POLICIES["policies/teams.yaml"].replace(
    b"    retry: [platform, sre]\n", b"    retry: [platform, sre, erin]\n", 1
)


@pytest.fixture
def gh() -> Iterator[QueueGitHub]:
    assert POLICIES["policies/teams.yaml"] != LOOSE
    fake = QueueGitHub(API)
    fake.installations.add(690857)  # the fixture payload's installation
    repo = fake.repo(REPO)
    repo.default_branch = "master"
    repo.commit({"README.md": "x", **POLICIES}, sha=BASE)
    repo.commit({"README.md": "x", **POLICIES, "plans/hello.yaml": PLAN}, sha=MERGE)
    repo.branches["master"] = MERGE
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake.install(rsps)
        yield fake
    assert fake.schema_errors == []  # every body sent matches GitHub's OpenAPI schema


def _check_run(gh: QueueGitHub, conclusion: str = "failure") -> None:
    gh.check_runs[CHECK_RUN] = {
        "id": CHECK_RUN,
        "name": "plangate/execute",
        "head_sha": MERGE,
        "status": "completed",
        "conclusion": conclusion,
        "annotations": [],
        "app": {"id": 42},
        "output": {"title": "plans/hello.yaml failed", "summary": "step table"},
    }


def _press(actor: str, identifier: str = "retry", **run: object) -> dict:
    payload = webhook_fixture("check_run.requested_action")
    payload["repository"]["full_name"] = REPO
    payload["repository"]["default_branch"] = "master"
    payload["sender"]["login"] = actor
    payload["requested_action"] = {"identifier": identifier}
    payload["check_run"].update(
        id=CHECK_RUN,
        name="plangate/execute",
        head_sha=MERGE,
        external_id=execute_external_id([("plans/hello.yaml", DIGEST)]),
        status="completed",
        conclusion="failure",
        details_url=f"https://ghes.example.com/{REPO}/actions/runs/{WORKFLOW_RUN}",
        output={"title": "plans/hello.yaml failed", "summary": "step table"},
    )
    payload["check_run"].update(run)
    return payload


def _deliver(settings, payload: dict, *, delivery: str = "d-1", times: int = 1):
    deps = make_deps(settings)
    client = TestClient(create_app(settings, deps))
    for _ in range(times):
        assert post(client, "check_run", payload, delivery=delivery).status_code in (200, 202)
    deps.worker.drain()
    return deps


def _records(gh: QueueGitHub) -> list[QueueRequest]:
    repo = gh.repo(REPO)
    if BRANCH not in repo.branches:
        return []
    files = gh.files_on(repo, BRANCH)
    return [
        QueueRequest.from_json(raw, source=path)
        for path, raw in sorted(files.items())
        if path.startswith("queue/requests/") and path.endswith(".json")
    ]


def _summary(gh: QueueGitHub) -> str:
    return gh.check_runs[CHECK_RUN]["output"]["summary"]


def test_retry_by_a_maintainer_outside_the_queue_rule_is_denied_and_nothing_dispatched(
    settings, gh
):
    _check_run(gh)
    _deliver(settings, _press("erin"))
    assert gh.dispatches == []
    (record,) = _records(gh)
    assert (record.actor, record.verb, record.verdict) == ("erin", "retry", "deny")
    assert record.rules == ("queue.platform.retry",)
    assert not any(p.startswith("queue/cancel/") for p in gh.files_on(gh.repo(REPO), BRANCH))
    summary = _summary(gh)
    assert "Retry requested by @erin: denied" in summary
    assert "queue.platform.retry" in summary and "erin may not retry" in summary
    assert "step table" in summary  # the executor's report stays below


def test_retry_by_the_pr_author_dispatches_the_execute_workflow_once(settings, gh):
    _check_run(gh)
    _deliver(settings, _press("alice"), delivery="press-1")
    request_id = request_id_for("retry", "press-1")
    assert gh.dispatches == [
        (
            "plangate-execute.yml",
            {"ref": "master", "inputs": {"queue_request": request_id}},
        )
    ]
    (record,) = _records(gh)
    assert (record.actor, record.verdict, record.commit) == ("alice", "allow", MERGE)
    assert [(p.path, p.digest) for p in record.plans] == [("plans/hello.yaml", DIGEST)]
    assert record.id == request_id and record.check_run_id == CHECK_RUN
    assert "Retry requested by @alice: allowed" in _summary(gh)
    # the failed run keeps its Retry button
    assert [a["identifier"] for a in gh.check_runs[CHECK_RUN]["actions"]] == ["retry"]


def test_a_sre_member_may_retry_a_platform_plan(settings, gh):
    _check_run(gh)
    _deliver(settings, _press("carol"))
    assert len(gh.dispatches) == 1


def test_duplicate_delivery_of_the_same_requested_action_dispatches_once(settings, gh):
    _check_run(gh)
    deps = _deliver(settings, _press("alice"), delivery="dup", times=2)
    client = TestClient(create_app(settings, deps))
    post(client, "check_run", _press("alice"), delivery="dup")  # redelivered after processing
    deps.worker.drain()
    assert len(gh.dispatches) == 1
    # the worker retrying the same delivery (say the answer to the marker write was lost):
    # the request record and its .dispatched marker keep it at one dispatch
    handler = QueueActions(now=lambda: datetime.now(UTC))
    event = Event(name="check_run", delivery_id="dup", payload=_press("alice"))
    handler.handle(app_clients(settings)(690857, REPO), event)
    assert len(gh.dispatches) == 1
    assert len(_records(gh)) == 1


def test_queue_policy_read_from_the_default_branch_not_the_pr_head(settings, gh):
    """The merge commit and an open pull request's head both let erin retry; the default
    branch's policy (tightened since) does not: denied."""
    repo = gh.repo(REPO)
    loose = {"README.md": "x", **POLICIES, "policies/teams.yaml": LOOSE}
    repo.commit({**loose, "plans/hello.yaml": PLAN}, sha=MERGE)  # the check run's commit
    head = repo.commit({**loose, "plans/other.yaml": PLAN}, branch="loosen", sha="4" * 40)
    repo.pulls[3] = Pull(3, head, MERGE, "master", author="erin")
    repo.commit({"README.md": "y", **POLICIES, "plans/hello.yaml": PLAN}, sha="5" * 40)
    repo.branches["master"] = "5" * 40
    _check_run(gh)
    payload = _press("erin")
    payload["check_run"]["check_suite"]["pull_requests"] = [
        {"number": 3, "head": {"ref": "loosen", "sha": head}, "base": {"ref": "master"}}
    ]
    _deliver(settings, payload)
    assert gh.dispatches == []
    (record,) = _records(gh)
    assert record.verdict == "deny"
    # control: once the default branch carries the looser policy, erin's retry goes through
    repo.commit({**loose, "README.md": "z", "plans/hello.yaml": PLAN}, sha="6" * 40)
    repo.branches["master"] = "6" * 40
    _deliver(settings, _press("erin"), delivery="d-2")
    assert len(gh.dispatches) == 1


def test_cancel_records_the_request_and_cancels_the_workflow_run(settings, gh):
    _check_run(gh)
    _deliver(
        settings,
        _press("judy", "cancel", status="in_progress", conclusion=None),
    )
    assert gh.cancelled_runs == [WORKFLOW_RUN]
    assert gh.dispatches == []
    files = gh.files_on(gh.repo(REPO), BRANCH)
    cancel = json.loads(files[f"queue/cancel/{DIGEST.removeprefix('sha256:')}.json"])
    assert (cancel["actor"], cancel["verb"], cancel["verdict"]) == ("judy", "cancel", "allow")
    assert "Cancel requested by @judy: allowed" in _summary(gh)


def test_cancel_of_a_workflow_run_that_already_ended_is_not_an_error(settings, gh):
    _check_run(gh)
    gh.finished_runs.add(WORKFLOW_RUN)
    deps = _deliver(settings, _press("alice", "cancel", status="in_progress", conclusion=None))
    assert deps.inbox.counts() == {"done": 1}
    assert any(p.startswith("queue/cancel/") for p in gh.files_on(gh.repo(REPO), BRANCH))


def test_cancel_by_an_actor_outside_the_queue_rule_is_denied(settings, gh):
    _check_run(gh)
    _deliver(settings, _press("erin", "cancel", status="in_progress", conclusion=None))
    assert gh.cancelled_runs == []
    files = gh.files_on(gh.repo(REPO), BRANCH)
    assert not any(p.startswith("queue/cancel/") for p in files)
    assert "denied by queue.platform.cancel" in _summary(gh)


def test_a_plan_changed_since_the_run_is_denied(settings, gh):
    _check_run(gh)
    payload = _press("alice")
    payload["check_run"]["external_id"] = execute_external_id(
        [("plans/hello.yaml", "sha256:" + "0" * 64)]
    )
    _deliver(settings, payload)
    assert gh.dispatches == []
    assert "is not the plan that ran" in _summary(gh)


def test_a_check_run_without_plangate_external_id_is_denied(settings, gh):
    _check_run(gh)
    _deliver(settings, _press("alice", external_id=""))
    assert gh.dispatches == []
    assert "names no plan" in _summary(gh)


def test_other_check_runs_keep_the_rerun_behaviour(settings, gh):
    """``requested_action`` on a pull request check (not plangate/execute) re-runs the checks."""
    repo = gh.repo(REPO)
    repo.commit({"README.md": "x", **POLICIES, "plans/hello.yaml": PLAN}, sha=HEAD)
    repo.pulls[2] = Pull(2, HEAD, BASE, "master")
    payload = _press("alice", name="plangate/approval", head_sha=HEAD)
    payload["check_run"]["pull_requests"] = [{"number": 2}]
    _deliver(settings, payload)
    assert gh.dispatches == []
    assert "plangate/validate" in gh.runs_for(HEAD)


def test_retry_press_over_real_http_against_the_loopback_fake(settings):
    """The same press with the App's real HTTP stack (``requests``) against ``QueueGitHub``
    served on 127.0.0.1, as the end-to-end and fault tests serve ``ghfake``."""
    fake = QueueGitHub("http://127.0.0.1/api/v3")
    fake.installations.add(690857)
    repo = fake.repo(REPO)
    repo.default_branch = "master"
    repo.commit({"README.md": "x", **POLICIES, "plans/hello.yaml": PLAN}, sha=MERGE)
    repo.branches["master"] = MERGE
    _check_run(fake)
    server, api = fake.serve()
    try:
        served = settings.model_copy(update={"github_api_url": api})
        _deliver(served, _press("alice"), delivery="loopback")
    finally:
        server.shutdown()
    assert fake.schema_errors == []
    assert [body["inputs"] for _, body in fake.dispatches] == [
        {"queue_request": request_id_for("retry", "loopback")}
    ]
    assert _records(fake)[0].verdict == "allow"


def test_cancel_of_a_paused_run_dispatches_the_executor_to_undo_it(settings, gh):
    """No workflow is running a paused run: the cancel is recorded and the execute workflow
    dispatched with the cancel's id (it compensates what the run changed), once."""
    _check_run(gh, conclusion="action_required")
    _deliver(settings, _press("judy", "cancel", conclusion="action_required"), times=2)
    assert gh.cancelled_runs == []
    assert gh.dispatches == [
        (
            "plangate-execute.yml",
            {"ref": "master", "inputs": {"queue_request": request_id_for("cancel", "d-1")}},
        )
    ]


def test_with_the_apps_signing_key_request_records_are_signed(settings, gh):
    """With ``PLANGATE_SIGNING_KEY_PATH`` the records are DSSE envelopes that verify against
    the App's key (what the executor checks through the policy's signers)."""
    from cryptography.hazmat.primitives import serialization

    from app.cli.execute import queue_document
    from app.signing import Trust, TrustedKey
    from app.signing.local_key import LocalKeySigner, generate_private_key

    key = generate_private_key()
    pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    _check_run(gh)
    deps = make_deps(settings, signer=LocalKeySigner(key))
    client = TestClient(create_app(settings, deps))
    post(client, "check_run", _press("alice"), delivery="signed")
    deps.worker.drain()
    path = f"queue/requests/{request_id_for('retry', 'signed')}.json"
    raw = gh.files_on(gh.repo(REPO), BRANCH)[path]
    assert b'"payloadType"' in raw
    trust = Trust(keys=(TrustedKey(public_key_pem=pem, name="app"),))
    request = queue_document(raw, path, trust)
    assert (request.actor, request.verdict) == ("alice", "allow")
