"""``plangate/approval`` reaches ``success`` only after the signed attestation is stored."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import responses
from cryptography.hazmat.primitives import serialization
from fastapi.testclient import TestClient
from ghfake import Pull, git_blob_sha
from gitdata_fake import GitDataGitHub
from srvkit import BASE, HEAD, PLAN, REPO, ROOT, create_app, make_deps, post, webhook_fixture

from app.approvals.attest import storage_path
from app.approvals.verify import verify_for_execution
from app.errors import AttestationError
from app.github.attestations import ATTESTATION_BRANCH
from app.plan.loader import load_plan_bytes
from app.server.engine import PolicyEngineEvaluator
from app.settings import Settings
from app.signing.base import Trust, TrustedKey
from app.signing.local_key import LocalKeySigner, generate_private_key, write_keypair

POLICIES = {
    f"policies/{p.name}": p.read_bytes() for p in sorted((ROOT / "policies").glob("*.yaml"))
}
NEW_HEAD = "1" * 40
APPROVAL = "plangate/approval"


@pytest.fixture
def gh() -> Iterator[GitDataGitHub]:
    fake = GitDataGitHub("https://ghes.example.com/api/v3")
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
    # every request body the app sent matches GitHub's OpenAPI request schema
    assert fake.schema_errors == []


@pytest.fixture
def key():
    return generate_private_key()


def _trust(key) -> Trust:
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return Trust(keys=(TrustedKey(public_key_pem=pem.decode(), name="plangate-app"),))


def _approve(gh, *, login="bob", commit=HEAD, review_id=11):
    gh.repo(REPO).pulls[2].reviews.append(
        {
            "id": review_id,
            "user": {"login": login},
            "state": "APPROVED",
            "commit_id": commit,
            "submitted_at": "2026-11-25T01:00:00Z",
        }
    )


def _review_event(head=HEAD):
    payload = webhook_fixture("pull_request_review.submitted")
    payload["pull_request"]["user"]["login"] = "alice"
    payload["pull_request"]["head"]["sha"] = head
    return payload


def _deliver(settings, payload, event="pull_request_review", **kw):
    deps = make_deps(settings, evaluator=PolicyEngineEvaluator(), **kw)
    client = TestClient(create_app(settings, deps))
    assert post(client, event, payload).status_code == 202
    deps.worker.drain()
    return deps


def _stored(gh, head=HEAD) -> bytes | None:
    repo = gh.repo(REPO)
    if ATTESTATION_BRANCH not in repo.branches:
        return None
    return gh.files_on(repo, ATTESTATION_BRANCH).get(storage_path(2, head, "dsse"))


def test_approval_success_only_after_attestation_stored(settings, gh, key):
    _approve(gh)
    gh.repo_ids[REPO] = 1296269
    order: list[str] = []
    # record the order of the writes that matter: the branch update, then the check run
    original = gh._repo_route

    def route(repo, method, sub, query, headers, data):
        if method == "POST" and sub == "/git/refs":
            order.append("attestation stored")
        if method == "POST" and sub == "/check-runs" and data.get("name") == APPROVAL:
            order.append(f"check {data.get('conclusion')}")
        return original(repo, method, sub, query, headers, data)

    gh._repo_route = route
    _deliver(settings, _review_event(), signer=LocalKeySigner(key))
    run = gh.runs_for(HEAD)[APPROVAL]
    assert run["conclusion"] == "success", run["output"]
    assert order == ["attestation stored", "check success"]
    assert storage_path(2, HEAD, "dsse") in run["output"]["summary"]

    document = _stored(gh)
    assert document is not None
    # round trip: the executor's gate accepts it with the key's public half as trust
    plan = load_plan_bytes("plans/hello.yaml", PLAN)
    verified = verify_for_execution(
        "plans/hello.yaml",
        plan.digest,
        document,
        _trust(key),
        REPO,
        2,
        datetime(2026, 11, 26, tzinfo=UTC),
        expected_head_sha=HEAD,
        expected_repo_id=1296269,
    )
    pred = verified.statement.predicate
    assert pred.repository.id == 1296269
    assert verified.approvers == ("bob",)
    assert pred.base is not None and pred.base.sha == BASE and pred.base.ref == "refs/heads/master"
    assert pred.pull_request is not None and pred.pull_request.url.endswith(f"{REPO}/pull/2")
    assert pred.policy_digest.startswith("sha256:") and pred.risk is not None
    (subject,) = verified.statement.subject
    assert subject.annotations is not None
    assert subject.annotations.git_blob == git_blob_sha(PLAN)
    # a different key is not trusted
    with pytest.raises(AttestationError) as err:
        verify_for_execution(
            "plans/hello.yaml",
            plan.digest,
            document,
            _trust(generate_private_key()),
            REPO,
            2,
            datetime(2026, 11, 26, tzinfo=UTC),
        )
    assert err.value.check == "signer"
    # replayed into another repository (same name after a rename, different id): rejected
    with pytest.raises(AttestationError) as err:
        verify_for_execution(
            "plans/hello.yaml",
            plan.digest,
            document,
            _trust(key),
            REPO,
            2,
            datetime(2026, 11, 26, tzinfo=UTC),
            expected_repo_id=999,
        )
    assert err.value.check == "repository"


def test_store_refused_holds_approval_with_the_reason(settings, gh, key):
    _approve(gh)
    gh.fail("POST", r"/git/commits$", status=403, times=100, message="Resource not accessible")
    deps = _deliver(settings, _review_event(), signer=LocalKeySigner(key))
    run = gh.runs_for(HEAD)[APPROVAL]
    assert run["conclusion"] == "action_required"
    assert "could not be stored" in run["output"]["title"]
    assert "Contents: write" in run["output"]["summary"]
    assert _stored(gh) is None
    assert deps.inbox.counts() == {"done": 1}


def test_store_unavailable_is_retried_and_never_reports_success(settings, gh, key):
    _approve(gh)
    gh.fail("POST", r"/git/blobs$", status=502, times=100)
    deps = _deliver(settings, _review_event(), signer=LocalKeySigner(key))
    assert APPROVAL not in gh.runs_for(HEAD)  # no check run at all, success least of all
    assert _stored(gh) is None
    assert deps.inbox.counts() == {"dead": 1}  # retried, then dead-lettered (redeliverable)


def test_attestation_never_written_to_pr_branch(settings, gh, key):
    repo = gh.repo(REPO)
    branches = dict(repo.branches)
    _approve(gh)
    _deliver(settings, _review_event(), signer=LocalKeySigner(key))
    assert gh.runs_for(HEAD)[APPROVAL]["conclusion"] == "success"
    # the PR's branch and head, and the base branch, are untouched
    assert {b: repo.branches[b] for b in branches} == branches
    assert repo.pulls[2].head_sha == HEAD
    assert HEAD not in gh.history(repo, ATTESTATION_BRANCH)
    ref_writes = [
        c for c in gh.calls if c.method in ("POST", "PATCH", "PUT") and "/git/refs" in c.path
    ]
    assert ref_writes
    for call in ref_writes:
        target = call.body.get("ref") or call.path
        assert target.endswith(ATTESTATION_BRANCH), call
    assert not gh.calls_to("PUT", r"/contents/")  # never the contents API on any branch


def test_stale_head_not_attested(settings, gh, key):
    """A push lands after the gate was evaluated: nothing is attested for the old head, and the
    new head is evaluated on its own (where the approval no longer counts: the plan changed)."""
    repo = gh.repo(REPO)
    _approve(gh)
    changed = PLAN.replace(b"hello", b"hullo", 1)
    assert changed != PLAN
    repo.commit({"README.md": "x", **POLICIES, "plans/hello.yaml": changed}, sha=NEW_HEAD)

    # the push happens while the review delivery (for HEAD) is being evaluated
    original = gh._repo_route
    pushed: list[bool] = []

    def route(r, method, sub, query, headers, data):
        if method == "GET" and sub == "/pulls/2/reviews" and not pushed:
            pushed.append(True)
            r.pulls[2].head_sha = NEW_HEAD
        return original(r, method, sub, query, headers, data)

    gh._repo_route = route
    original_graphql = gh._graphql

    def graphql(request):  # the reviews are read with the commits in one query
        out = original_graphql(request)
        if "number" in (request.get("variables") or {}) and not pushed:
            pushed.append(True)
            repo.pulls[2].head_sha = NEW_HEAD
        return out

    gh._graphql = graphql
    signer = LocalKeySigner(key)
    _deliver(settings, _review_event(HEAD), signer=signer)
    old = gh.runs_for(HEAD)[APPROVAL]
    assert old["conclusion"] == "action_required"
    assert "Superseded" in old["output"]["title"]
    assert ATTESTATION_BRANCH not in repo.branches  # nothing attested for the evaluated head

    # the synchronize delivery for the new head re-evaluates: bob approved the old plan
    sync = webhook_fixture("pull_request.synchronize")
    sync["pull_request"]["head"]["sha"] = NEW_HEAD
    sync["pull_request"]["user"]["login"] = "alice"
    _deliver(settings, sync, event="pull_request", signer=signer)
    new = gh.runs_for(NEW_HEAD)[APPROVAL]
    assert new["conclusion"] == "action_required"
    assert _stored(gh, NEW_HEAD) is None and _stored(gh, HEAD) is None

    # bob approves the new head: it is attested for NEW_HEAD only, bound to that head
    _approve(gh, commit=NEW_HEAD, review_id=12)
    _deliver(settings, _review_event(NEW_HEAD), signer=signer)
    assert gh.runs_for(NEW_HEAD)[APPROVAL]["conclusion"] == "success"
    document = _stored(gh, NEW_HEAD)
    assert document is not None and _stored(gh, HEAD) is None
    statement = json.loads(base64.b64decode(json.loads(document)["payload"]))
    assert statement["predicate"]["headSha"] == NEW_HEAD


def test_no_signing_key_fails_closed(settings, gh):
    _approve(gh)
    assert settings.signing_key_path is None
    _deliver(settings, _review_event())
    run = gh.runs_for(HEAD)[APPROVAL]
    assert run["conclusion"] == "action_required"
    assert "attestations are not configured" in run["output"]["title"]
    assert "PLANGATE_SIGNING_KEY_PATH" in run["output"]["summary"]
    assert ATTESTATION_BRANCH not in gh.repo(REPO).branches
    assert not [c for c in gh.calls if "/git/" in c.path and c.method != "GET"]


def test_signing_key_from_settings(tmp_path, settings, gh, key):
    """Production wiring: PLANGATE_SIGNING_KEY_PATH -> LocalKeySigner -> attester."""
    paths = write_keypair(tmp_path / "keys" / "plangate.key", key)
    configured = settings.model_copy(update={"signing_key_path": paths.private})
    _approve(gh)
    _deliver(configured, _review_event())
    assert gh.runs_for(HEAD)[APPROVAL]["conclusion"] == "success"
    assert _stored(gh) is not None


def test_settings_read_signing_key_path(tmp_path):
    s = Settings.from_env({"PLANGATE_SIGNING_KEY_PATH": str(tmp_path / "k.pem")})
    assert s.signing_key_path == tmp_path / "k.pem"
    assert Settings.from_env({}).signing_key_path is None


def test_unreadable_signing_key_is_a_startup_error(tmp_path, settings):
    configured = settings.model_copy(update={"signing_key_path": tmp_path / "missing.pem"})
    with pytest.raises(AttestationError, match=r"missing\.pem"):
        make_deps(configured, evaluator=PolicyEngineEvaluator())


def test_redelivery_of_same_head_reuses_the_stored_attestation(settings, gh, key):
    _approve(gh)
    signer = LocalKeySigner(key)
    _deliver(settings, _review_event(), signer=signer)
    repo = gh.repo(REPO)
    first = gh.history(repo, ATTESTATION_BRANCH)
    writes = len([c for c in gh.calls if "/git/" in c.path and c.method != "GET"])
    _deliver(settings, _review_event(), signer=signer)  # e.g. a re-run of the check
    assert gh.history(repo, ATTESTATION_BRANCH) == first  # not re-signed, nothing written
    assert len([c for c in gh.calls if "/git/" in c.path and c.method != "GET"]) == writes
    assert list(gh.files_on(repo, ATTESTATION_BRANCH)) == [storage_path(2, HEAD, "dsse")]
    assert gh.runs_for(HEAD)[APPROVAL]["conclusion"] == "success"


def test_changed_approval_replaces_the_attestation(settings, gh, key):
    _approve(gh)
    signer = LocalKeySigner(key)
    _deliver(settings, _review_event(), signer=signer)
    repo = gh.repo(REPO)
    first = gh.history(repo, ATTESTATION_BRANCH)
    _approve(gh, review_id=12)  # bob approves again: the counted review is now 12
    _deliver(settings, _review_event(), signer=signer)
    history = gh.history(repo, ATTESTATION_BRANCH)
    assert len(history) == 2 and history[1:] == first
    document = _stored(gh)
    assert document is not None
    statement = json.loads(base64.b64decode(json.loads(document)["payload"]))
    assert statement["predicate"]["headSha"] == HEAD
    assert [a["reviewId"] for a in statement["predicate"]["approvers"]] == [12]


def test_attestation_signed_by_another_key_is_not_reused(settings, gh, key):
    _approve(gh)
    _deliver(settings, _review_event(), signer=LocalKeySigner(generate_private_key()))
    repo = gh.repo(REPO)
    first = gh.history(repo, ATTESTATION_BRANCH)
    _deliver(settings, _review_event(), signer=LocalKeySigner(key))  # the key was rotated
    assert len(gh.history(repo, ATTESTATION_BRANCH)) == len(first) + 1
    plan = load_plan_bytes("plans/hello.yaml", PLAN)
    verify_for_execution(
        "plans/hello.yaml",
        plan.digest,
        _stored(gh),
        _trust(key),
        REPO,
        2,
        datetime.now(UTC),
    )


def test_unsatisfied_gate_writes_nothing(settings, gh, key):
    _approve(gh, login="alice")  # the author's own approval never counts
    _deliver(settings, _review_event(), signer=LocalKeySigner(key))
    assert gh.runs_for(HEAD)[APPROVAL]["conclusion"] == "action_required"
    assert not [c for c in gh.calls if "/git/" in c.path and c.method != "GET"]


def _gate(**kw):
    from app.approvals.gate import GateResult

    values = {
        "status": "satisfied",
        "reason": "ok",
        "evaluated_at": datetime(2026, 11, 25, 2, tzinfo=UTC),
        "author": "alice",
        "head_sha": HEAD,
        "base_ref": "refs/heads/master",
        "base_sha": BASE,
    }
    values.update(kw)
    return GateResult(**values)


class _NoClient:
    full_name = REPO

    def pull(self, number):  # pragma: no cover - must not be reached
        raise AssertionError("a gate result for another head/base must not be attested")


@pytest.mark.parametrize(
    ("head", "base_ref"), [(NEW_HEAD, "master"), (HEAD, "release"), (NEW_HEAD, "release")]
)
def test_gate_result_for_another_head_or_base_is_held(key, head, base_ref):
    from app.github.checks import CheckOutcome
    from app.github.client import PullRequestInfo
    from app.server.approval import ApprovalAttester, ApprovalFacts

    attester = ApprovalAttester(LocalKeySigner(key))
    pull = PullRequestInfo(2, "alice", head, BASE, base_ref)
    pending = CheckOutcome(APPROVAL, "action_required", "t", "s")
    out = attester.finalize(
        _NoClient(),  # type: ignore[arg-type]
        pull,
        None,  # type: ignore[arg-type]
        ApprovalFacts(gate=_gate(), policy_digest="sha256:" + "0" * 64),
        approval=pending,
        files=[],
    )
    assert out.conclusion == "action_required"
    assert "another head or base" in out.title


def test_unsatisfied_gate_passes_the_outcome_through(key):
    from app.github.checks import CheckOutcome
    from app.github.client import PullRequestInfo
    from app.server.approval import ApprovalAttester, ApprovalFacts, AttestationsNotConfigured

    pending = CheckOutcome(APPROVAL, "action_required", "Waiting for 1 approval", "s")
    facts = ApprovalFacts(gate=_gate(status="pending"), policy_digest="sha256:" + "0" * 64)
    pull = PullRequestInfo(2, "alice", HEAD, BASE, "master")
    for attester in (ApprovalAttester(LocalKeySigner(key)), AttestationsNotConfigured()):
        out = attester.finalize(
            _NoClient(),  # type: ignore[arg-type]
            pull,
            None,  # type: ignore[arg-type]
            facts,
            approval=pending,
            files=[],
        )
        assert out is pending


def test_web_url_and_combined_facts():
    from decimal import Decimal

    from app.approvals.attest import Risk
    from app.server.approval import combine_cost, combine_risk, web_url_for

    assert web_url_for("https://api.github.com") == "https://github.com"
    assert web_url_for("https://ghes.example.com/api/v3/") == "https://ghes.example.com"
    assert combine_risk([None, Risk(score=3, level="low"), Risk(score=40, level="high")]) == Risk(
        score=40, level="high"
    )
    assert combine_risk([None]) is None
    cost = combine_cost([(Decimal("1.5"), "USD"), (Decimal("2"), "USD")])
    assert cost is not None and cost.total == Decimal("3.5") and cost.currency == "USD"
    assert combine_cost([(Decimal(1), "USD"), (Decimal(1), "EUR")]) is None
    assert combine_cost([]) is None


class _BrokenSigner:
    kind = "dsse"

    def sign(self, payload_type: str, payload: bytes) -> bytes:
        raise AttestationError("the signing service refused", check="sign", hint="check it")


def test_signing_failure_holds_approval_and_writes_nothing(settings, gh):
    _approve(gh)
    _deliver(settings, _review_event(), signer=_BrokenSigner())
    run = gh.runs_for(HEAD)[APPROVAL]
    assert run["conclusion"] == "action_required"
    assert "could not be signed" in run["output"]["title"]
    assert "the signing service refused" in run["output"]["summary"]
    assert not [c for c in gh.calls if "/git/" in c.path and c.method != "GET"]
