"""Keyless approvals end to end: App dispatches -> default-branch workflow signs -> App passes.

The App (``PLANGATE_APPROVAL_BACKEND=keyless``) never signs: when the gate is satisfied it sends
a ``repository_dispatch`` (body checked against GitHub's OpenAPI schema) and holds
``plangate/approval``. The approval workflow's command, ``plangate attest --pr N --head-sha SHA``,
re-evaluates the same gate from GitHub, signs keylessly with sigstore-python's real ``Signer``
against the local fake Sigstore (``tests/signing/fake_sigstore.py``: Fulcio CA with the GitHub
workflow extensions + SCT, Rekor with inclusion proof, checkpoint and SET) using the Actions OIDC
token requested from ``ACTIONS_ID_TOKEN_REQUEST_URL``, and stores the bundle on the attestation
branch; the push brings the App back, which verifies the bundle against the pinned identity and
turns the check green. The executor's checks then accept it with trust from policy ``signers``.
"""

from __future__ import annotations

import base64
import functools
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import responses
import sigstore
from fastapi.testclient import TestClient

TESTS = Path(__file__).resolve().parent.parent
for sub in ("github", "server", "signing"):
    if str(TESTS / sub) not in sys.path:
        sys.path.insert(0, str(TESTS / sub))

import fake_sigstore  # noqa: E402
from ghfake import Pull  # noqa: E402
from gitdata_fake import GitDataGitHub  # noqa: E402
from srvkit import BASE, HEAD, PLAN, REPO, ROOT, SECRET, post, webhook_fixture  # noqa: E402

from app.approvals.attest import storage_path  # noqa: E402
from app.approvals.verify import verify_for_execution  # noqa: E402
from app.cli import main  # noqa: E402
from app.errors import AttestationError  # noqa: E402
from app.github.attestations import ATTESTATION_BRANCH  # noqa: E402
from app.github.client import HttpRetry  # noqa: E402
from app.plan.loader import load_plan_bytes  # noqa: E402
from app.policy.model import SigstoreSigner as PolicySigstoreSigner  # noqa: E402
from app.server import app as server_app  # noqa: E402
from app.server.app import Deps, create_app  # noqa: E402
from app.server.approval import KeylessApprovalAttester  # noqa: E402
from app.server.engine import PolicyEngineEvaluator  # noqa: E402
from app.server.worker import WorkerPolicy  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.signing import GITHUB_ACTIONS_ISSUER, trust_from_policy  # noqa: E402
from app.signing.sigstore_backend import SigstoreSigner, SigstoreVerifier  # noqa: E402

pytestmark = pytest.mark.skipif(
    sigstore.__version__ != fake_sigstore.SIGSTORE_VERSION,
    reason="the fake Sigstore uses private sigstore-python APIs of one pinned version",
)

API = "https://api.github.com"
REPO_ID = 1296269
WORKFLOW = "plangate-approve.yml"
SAN = f"https://github.com/{REPO}/.github/workflows/{WORKFLOW}@refs/heads/master"
TOKEN_URL = "https://pipelines.actions.example/oidc/idtoken?api-version=2.0"
APPROVAL = "plangate/approval"
POLICIES = {
    f"policies/{p.name}": p.read_bytes() for p in sorted((ROOT / "policies").glob("*.yaml"))
}
OPENAPI = json.loads((TESTS / "fixtures" / "github" / "openapi-approval-subset.json").read_text())[
    "operations"
]


class ApprovalGitHub(GitDataGitHub):
    """``GitDataGitHub`` plus the two operations of the keyless path, schema-checked."""

    def __init__(self, base: str) -> None:
        super().__init__(base)
        self.dispatches: list[dict[str, Any]] = []
        self.uploads: list[dict[str, Any]] = []

    def _check(self, operation: str, data: Any) -> None:
        schema = OPENAPI[operation]["request_body_schema"]
        for error in jsonschema.Draft4Validator(schema).iter_errors(data):
            self.schema_errors.append(f"{operation}: {error.json_path}: {error.message}")

    def _repo_route(self, repo, method, sub, query, headers, data):  # type: ignore[no-untyped-def]
        if sub == "/dispatches" and method == "POST":
            self._check("repos/create-dispatch-event", data)
            self.dispatches.append(data)
            return 204, {}, None
        if sub == "/attestations" and method == "POST":
            self._check("repos/create-attestation", data)
            self.uploads.append(data)
            return 201, {}, OPENAPI["repos/create-attestation"]["examples"]["201"]
        if sub == "" and method == "GET" and repo.full_name in self.repo_ids:
            status, hdrs, payload = super()._repo_route(repo, method, sub, query, headers, data)
            return status, hdrs, {**payload, "id": self.repo_ids[repo.full_name]}
        return super()._repo_route(repo, method, sub, query, headers, data)


@pytest.fixture(scope="module")
def instance() -> fake_sigstore.FakeSigstore:
    return fake_sigstore.FakeSigstore()


@pytest.fixture
def verifier(instance) -> SigstoreVerifier:
    return SigstoreVerifier(trusted_roots={"production": instance.trusted_root()})


@pytest.fixture
def gh() -> Iterator[ApprovalGitHub]:
    fake = ApprovalGitHub(API)
    fake.repo_ids[REPO] = REPO_ID
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
    assert fake.schema_errors == []  # every body we sent matches GitHub's OpenAPI schema


@pytest.fixture
def settings(tmp_path: Path, private_key: str) -> Settings:
    return Settings(
        github_app_id=42,
        github_private_key=private_key,
        github_webhook_secret=SECRET,
        github_api_url=API,
        data_dir=tmp_path / "data",
        approval_backend="keyless",
    )


@pytest.fixture(scope="session")
def private_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture
def app_deps(settings, verifier, monkeypatch):
    """The App, keyless, with the fake Sigstore's trusted root for reading stored bundles."""
    monkeypatch.setattr(
        server_app,
        "KeylessApprovalAttester",
        functools.partial(KeylessApprovalAttester, sigstore_verifier=verifier),
    )
    deps = Deps.from_settings(
        settings,
        evaluator=PolicyEngineEvaluator(),
        http_retry=HttpRetry(max_attempts=3, initial_delay=0, max_delay=0),
        worker_policy=WorkerPolicy(initial_delay=0, max_delay=0),
        sleep=lambda _s: None,
        start_worker=False,
    )
    return deps, TestClient(create_app(settings, deps))


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


def _review_event():
    payload = webhook_fixture("pull_request_review.submitted")
    payload["pull_request"]["user"]["login"] = "alice"
    payload["pull_request"]["head"]["sha"] = HEAD
    return payload


def _deliver(app_deps, event: str, payload: dict[str, Any]) -> None:
    deps, client = app_deps
    assert post(client, event, payload).status_code == 202
    deps.worker.drain()


def _attestation_push(path: str) -> dict[str, Any]:
    payload = webhook_fixture("push.default_branch")
    payload["ref"] = f"refs/heads/{ATTESTATION_BRANCH}"
    payload["commits"] = [{**payload["commits"][0], "added": [path], "modified": [], "removed": []}]
    return payload


@pytest.fixture
def workflow_env(gh, instance, monkeypatch):
    """What a repository_dispatch run of plangate-approve.yml on master sees."""
    token = fake_sigstore.actions_token(
        f"{REPO}/.github/workflows/{WORKFLOW}@refs/heads/master",
        repository_id=str(REPO_ID),
        ref="refs/heads/master",
        event_name="repository_dispatch",
    )
    monkeypatch.setattr(SigstoreSigner, "_signing_context", lambda self: instance.signing_context())
    env = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": "repository_dispatch",
        "GITHUB_REF": "refs/heads/master",
        "GITHUB_REPOSITORY": REPO,
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_API_URL": API,
        "GITHUB_TOKEN": "ghs_workflow_token",
        "ACTIONS_ID_TOKEN_REQUEST_URL": TOKEN_URL,
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "request-bearer",
    }
    for name in ("GITHUB_APP_ID", "GITHUB_PRIVATE_KEY", "GITHUB_PRIVATE_KEY_PATH"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return token


def _run_workflow(gh, token: str, *extra: str) -> tuple[int, list[Any]]:
    """``plangate attest --pr 2 --head-sha HEAD`` as the workflow runs it."""
    seen: list[Any] = []

    def answer(request):
        seen.append(request)
        return 200, {"Content-Type": "application/json"}, json.dumps({"value": token})

    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        gh.install(rsps)
        rsps.add_callback("GET", TOKEN_URL.split("?")[0], callback=answer)
        code = main(["attest", "--pr", "2", "--head-sha", HEAD, "--workflow", WORKFLOW, *extra])
    return code, seen


def _stored(gh) -> bytes | None:
    repo = gh.repo(REPO)
    if ATTESTATION_BRANCH not in repo.branches:
        return None
    return gh.files_on(repo, ATTESTATION_BRANCH).get(storage_path(2, HEAD, "sigstore"))


def _policy_trust(repository_id: int = REPO_ID):
    """Trust as the default branch's policy states it: SAN, issuer, repository URI and id."""
    return trust_from_policy(
        [
            PolicySigstoreSigner(
                name="approve-workflow",
                type="sigstore",
                identity=SAN,
                issuer=GITHUB_ACTIONS_ISSUER,
                repository=f"https://github.com/{REPO}",
                repository_id=repository_id,
            )
        ]
    )


# --- the App's side -------------------------------------------------------------------------


def test_app_dispatches_approval_workflow_when_gate_satisfied(gh, app_deps):
    _approve(gh)
    _deliver(app_deps, "pull_request_review", _review_event())
    run = gh.runs_for(HEAD)[APPROVAL]
    assert run["conclusion"] == "action_required"
    assert "signing in the approval workflow" in run["output"]["title"]
    assert gh.dispatches == [
        {"event_type": "plangate-approve", "client_payload": {"pr": 2, "head_sha": HEAD}}
    ]
    assert _stored(gh) is None  # the App itself signs nothing in keyless mode


def test_app_does_not_dispatch_while_gate_pending(gh, app_deps):
    _approve(gh, login="alice")  # the author's own approval never counts
    _deliver(app_deps, "pull_request_review", _review_event())
    assert gh.runs_for(HEAD)[APPROVAL]["conclusion"] == "action_required"
    assert gh.dispatches == []


def test_app_dispatches_once_per_head_within_the_window(gh, app_deps):
    _approve(gh)
    _deliver(app_deps, "pull_request_review", _review_event())
    _deliver(app_deps, "pull_request_review", _review_event())
    assert len(gh.dispatches) == 1
    assert "already started" in gh.runs_for(HEAD)[APPROVAL]["output"]["summary"]


def test_two_replicas_sharing_the_store_dispatch_once_per_head(gh, app_deps, settings):
    # a second App instance on the same inbox (SQLite here; PostgreSQL with
    # PLANGATE_DATABASE_URL): the re-dispatch limit is claimed in the shared store, not held
    # per process, so the review seen by the other replica does not dispatch again
    deps_a, _ = app_deps
    deps_b = Deps.from_settings(
        settings,
        evaluator=PolicyEngineEvaluator(),
        http_retry=HttpRetry(max_attempts=3, initial_delay=0, max_delay=0),
        worker_policy=WorkerPolicy(initial_delay=0, max_delay=0),
        sleep=lambda _s: None,
        start_worker=False,
    )
    replica_b = (deps_b, TestClient(create_app(settings, deps_b)))
    _approve(gh)
    _deliver(app_deps, "pull_request_review", _review_event())
    _deliver(replica_b, "pull_request_review", _review_event())
    assert len(gh.dispatches) == 1
    assert deps_a.inbox.counts() == {"done": 2}
    assert "already started" in gh.runs_for(HEAD)[APPROVAL]["output"]["summary"]


def test_refused_dispatch_releases_the_shared_claim(gh, app_deps):
    _approve(gh)
    gh.fail("POST", r"/dispatches$", status=403, times=1, message="Resource not accessible")
    _deliver(app_deps, "pull_request_review", _review_event())
    _deliver(app_deps, "pull_request_review", _review_event())  # the next review dispatches
    assert len(gh.dispatches) == 1


def test_refused_dispatch_holds_the_check_with_the_reason(gh, app_deps):
    _approve(gh)
    gh.fail("POST", r"/dispatches$", status=403, times=10, message="Resource not accessible")
    _deliver(app_deps, "pull_request_review", _review_event())
    run = gh.runs_for(HEAD)[APPROVAL]
    assert run["conclusion"] == "action_required"
    assert "could not be started" in run["output"]["title"]
    assert "Contents: write" in run["output"]["summary"]


# --- the workflow's side and the round trip -------------------------------------------------


def test_keyless_approval_round_trip(gh, app_deps, workflow_env, verifier, capsys):
    _approve(gh)
    _deliver(app_deps, "pull_request_review", _review_event())
    assert len(gh.dispatches) == 1

    code, token_requests = _run_workflow(gh, workflow_env)
    out = capsys.readouterr().out
    assert code == 0, out
    # the OIDC token was requested the way GitHub documents it
    (request,) = token_requests
    assert request.headers["Authorization"] == "bearer request-bearer"
    assert "audience=sigstore" in request.url

    bundle = _stored(gh)
    assert bundle is not None
    data = json.loads(bundle)
    assert data["mediaType"].startswith("application/vnd.dev.sigstore.bundle")

    # the executor's checks accept it with trust from the policy's signers (pinned identity)
    plan = load_plan_bytes("plans/hello.yaml", PLAN)
    verified = verify_for_execution(
        "plans/hello.yaml",
        plan.digest,
        bundle,
        _policy_trust(),
        REPO,
        2,
        datetime.now(UTC) + timedelta(minutes=1),
        expected_repo_id=REPO_ID,
        expected_head_sha=HEAD,
        sigstore_verifier=verifier,
    )
    assert verified.signer.id == SAN
    assert verified.approvers == ("bob",)

    # the workflow's push to the attestation branch brings the App back: check turns green
    _deliver(app_deps, "push", _attestation_push(storage_path(2, HEAD, "sigstore")))
    run = gh.runs_for(HEAD)[APPROVAL]
    assert run["conclusion"] == "success", run["output"]
    assert storage_path(2, HEAD, "sigstore") in run["output"]["summary"]


def test_keyless_bundle_from_other_repository_id_rejected(gh, workflow_env, verifier, capsys):
    """Policy pins the repository id: same SAN and URI, other id (re-created repo) -> signer."""
    _approve(gh)
    assert _run_workflow(gh, workflow_env)[0] == 0
    bundle = _stored(gh)
    plan = load_plan_bytes("plans/hello.yaml", PLAN)
    with pytest.raises(AttestationError) as info:
        verify_for_execution(
            "plans/hello.yaml",
            plan.digest,
            bundle,
            _policy_trust(repository_id=REPO_ID + 1),
            REPO,
            2,
            datetime.now(UTC),
            sigstore_verifier=verifier,
        )
    assert info.value.check == "signer"


def test_workflow_reevaluates_gate_and_signs_nothing_when_not_satisfied(gh, workflow_env, capsys):
    # dispatched by someone with write access, but only the author approved: nothing signed
    _approve(gh, login="alice")
    code, _ = _run_workflow(gh, workflow_env)
    assert code == 1
    assert _stored(gh) is None
    assert ATTESTATION_BRANCH not in gh.repo(REPO).branches
    out = capsys.readouterr().out
    assert "alice" in out  # the gate's table says why (the author never counts)


def test_workflow_refuses_moved_head(gh, workflow_env, capsys):
    _approve(gh)
    gh.repo(REPO).pulls[2].head_sha = "1" * 40
    code, _ = _run_workflow(gh, workflow_env)
    assert code == 1
    assert "moved" in capsys.readouterr().out
    assert _stored(gh) is None


@pytest.mark.parametrize("event", ["pull_request_review", "pull_request_target"])
def test_workflow_never_signs_in_pull_request_runs(gh, workflow_env, monkeypatch, event, capsys):
    _approve(gh)
    monkeypatch.setenv("GITHUB_EVENT_NAME", event)
    code, token_requests = _run_workflow(gh, workflow_env)
    assert code != 0
    assert token_requests == []  # refused before any OIDC token is requested
    assert _stored(gh) is None


def test_workflow_never_signs_from_another_branch(gh, workflow_env, monkeypatch):
    _approve(gh)
    monkeypatch.setenv("GITHUB_REF", "refs/heads/feature")
    code, token_requests = _run_workflow(gh, workflow_env)
    assert code != 0 and token_requests == [] and _stored(gh) is None


def test_workflow_rejects_malformed_inputs(gh, workflow_env, capsys):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        gh.install(rsps)
        assert main(["attest", "--pr", "2", "--head-sha", "HEAD; rm -rf /"]) == 2
        assert main(["attest", "--pr", "0", "--head-sha", HEAD]) == 2
    assert "40-hex" in capsys.readouterr().err


def test_second_workflow_run_never_loses_the_first_attestation(gh, workflow_env):
    _approve(gh)
    assert _run_workflow(gh, workflow_env)[0] == 0
    first = gh.history(gh.repo(REPO), ATTESTATION_BRANCH)
    assert _run_workflow(gh, workflow_env)[0] == 0
    # the branch only grows by fast-forward: the first commit stays in its history
    history = gh.history(gh.repo(REPO), ATTESTATION_BRANCH)
    assert history[-len(first) :] == first


def test_upload_to_github_attestations_api_is_opt_in(gh, workflow_env):
    _approve(gh)
    assert _run_workflow(gh, workflow_env)[0] == 0
    assert gh.uploads == []  # off by default
    assert _run_workflow(gh, workflow_env, "--github-attestations-api")[0] == 0
    (upload,) = gh.uploads
    assert upload["bundle"] == json.loads(_stored(gh))


def test_plangate_verify_pins_repository_id_of_keyless_bundle(
    gh, workflow_env, instance, tmp_path, monkeypatch, capsys
):
    _approve(gh)
    assert _run_workflow(gh, workflow_env)[0] == 0
    bundle = _stored(gh)
    statement = json.loads(base64.b64decode(json.loads(bundle)["dsseEnvelope"]["payload"]))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "plans").mkdir()
    (tmp_path / "plans" / "hello.yaml").write_bytes(PLAN)
    (tmp_path / "bundle.json").write_bytes(bundle)
    # offline against the fake instance's trusted root instead of the one in the wheel
    monkeypatch.setattr(SigstoreVerifier, "_root", lambda self, _i: instance.trusted_root())
    common = ["verify", "plans/hello.yaml", "--attestation", "bundle.json", "--repo", REPO]
    common += ["--pr", "2", "--trusted-identity", SAN]
    common += ["--policy-digest", statement["predicate"]["policyDigest"]]
    capsys.readouterr()
    assert main([*common, "--repo-id", str(REPO_ID)]) == 0, capsys.readouterr().err
    assert main([*common, "--repo-id", str(REPO_ID + 1)]) == 1
    assert "FAILED check 'signer'" in capsys.readouterr().err


def test_app_ignores_bundle_signed_by_another_workflow(gh, app_deps, instance, monkeypatch):
    """A bundle on the branch signed by any other workflow (a copy someone with write access
    added, say) is not the pinned identity: the App does not pass the check on it."""
    _approve(gh)
    other = fake_sigstore.actions_token(
        f"{REPO}/.github/workflows/other.yml@refs/heads/master",
        repository_id=str(REPO_ID),
        ref="refs/heads/master",
        event_name="workflow_dispatch",
    )
    monkeypatch.setattr(SigstoreSigner, "_signing_context", lambda self: instance.signing_context())
    env = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": "workflow_dispatch",
        "GITHUB_REF": "refs/heads/master",
        "GITHUB_REPOSITORY": REPO,
        "GITHUB_API_URL": API,
        "GITHUB_TOKEN": "ghs_workflow_token",
        "ACTIONS_ID_TOKEN_REQUEST_URL": TOKEN_URL,
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "request-bearer",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("GITHUB_APP_ID", "GITHUB_PRIVATE_KEY", "GITHUB_PRIVATE_KEY_PATH"):
        monkeypatch.delenv(name, raising=False)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        gh.install(rsps)
        rsps.add_callback(
            "GET",
            TOKEN_URL.split("?")[0],
            callback=lambda _r: (200, {}, json.dumps({"value": other})),
        )
        assert main(["attest", "--pr", "2", "--head-sha", HEAD, "--workflow", "other.yml"]) == 0
    assert _stored(gh) is not None  # stored where the real one would be
    _deliver(app_deps, "push", _attestation_push(storage_path(2, HEAD, "sigstore")))
    run = gh.runs_for(HEAD)[APPROVAL]
    assert run["conclusion"] == "action_required", run["output"]
    assert gh.dispatches  # the App asks the real approval workflow to sign instead
