"""``plangate execute``: the run attestation on the attestation branch, and ref locks.

Same world as ``test_execute_github`` (a real checkout, a fake GitHub behind ``responses`` with
every request body checked against ``@octokit/openapi``), plus the git data API the attestation
store and the lock refs use.
"""

from __future__ import annotations

import hashlib
import json

import pytest
from cryptography.hazmat.primitives import serialization

from app.approvals.attest import storage_path
from app.approvals.run_attest import RUN_PREDICATE_TYPE
from app.approvals.run_verify import verify_run_attestation
from app.audit.git_store import GitAuditStore
from app.errors import AttestationError
from app.execute.github_locks import Lease, lock_ref
from app.signing import Trust, TrustedKey
from tests.execute import test_execute_github as base
from tests.execute.test_execute_github import BRANCH, PLAN, PR, execute

world = base.world  # the same fixture: checkout, keys, fake GitHub


def _key(world, tmp_path):
    path = tmp_path / "executor.pem"
    path.write_bytes(
        world.signer._key.private_bytes(  # the approval key doubles as the executor's key here
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def _trust(world) -> Trust:
    return Trust(keys=(TrustedKey(public_key_pem=world.key_pem, name="test"),))


def test_run_is_attested_beside_the_approval_and_verifies(world, tmp_path):
    world.build()
    world.attest()
    assert execute(world, "--signing-key", str(_key(world, tmp_path))) == 0
    gh = world.gh
    approval = gh.files[(storage_path(PR, world.head, "dsse"), BRANCH)]
    stored = {p: d for p, d in gh.git.files(BRANCH).items() if ".run-" in p}
    ((path, document),) = stored.items()
    assert path.startswith(f"pr-{PR}/{world.head}.run-") and path.endswith(".dsse.json")
    verified = verify_run_attestation(
        document,
        _trust(world),
        plan_digest=world.plan_digest(),
        plan_path=PLAN,
        approval_document=approval,  # bound to the exact approval the run was gated on
    )
    pred = verified.predicate
    assert verified.statement.predicate_type == RUN_PREDICATE_TYPE
    assert pred.status == "succeeded" and pred.correlation_id == pred.run_id
    assert [s.id for s in pred.steps] == ["greet", "write-marker", "done"]
    assert pred.invocation["kind"] == "github-actions" and pred.invocation["pullRequest"] == PR
    assert f".run-{pred.run_id}." in path
    # "who approved" and "what ran" are both verifiable, and tied together
    assert "Run attestation (what ran, signed)" in gh.summary()
    store = GitAuditStore(world.root)
    try:
        (event,) = [e for e in store.events() if e.type == "run.attested"]
        assert store.verify().ok
    finally:
        store.close()
    assert event.payload["attestation_digest"] == "sha256:" + hashlib.sha256(document).hexdigest()
    assert event.payload["location"].startswith(f"{BRANCH}:{path}@")


def test_tampered_run_attestation_on_the_branch_is_rejected(world, tmp_path):
    world.build()
    world.attest()
    assert execute(world, "--signing-key", str(_key(world, tmp_path))) == 0
    ((_, document),) = [(p, d) for p, d in world.gh.git.files(BRANCH).items() if ".run-" in p]
    doc = json.loads(document)
    doc["signatures"][0]["sig"] = doc["signatures"][0]["sig"][:-4] + "AAAA"
    with pytest.raises(AttestationError) as info:
        verify_run_attestation(
            json.dumps(doc).encode(), _trust(world), plan_digest=world.plan_digest()
        )
    assert info.value.check == "signature"


def test_a_plan_refused_before_it_runs_is_not_attested(world, tmp_path):
    world.build()  # no approval stored: refused before the runner starts, nothing to attest
    assert execute(world, "--signing-key", str(_key(world, tmp_path))) == 1
    assert not [p for p in world.gh.git.files(BRANCH) if ".run-" in p]


def test_attest_run_sigstore_without_an_oidc_token_is_invalid_input(world, capsys):
    world.build()
    world.attest()
    assert execute(world, "--attest-run", "sigstore") == 2
    assert "id-token: write" in capsys.readouterr().err
    assert not world.marker().exists() and world.gh.check_runs == {}


def test_attest_run_key_without_a_key_is_invalid_input(world, capsys):
    world.build()
    world.attest()
    assert execute(world, "--attest-run", "key") == 2
    assert "PLANGATE_SIGNING_KEY_PATH" in capsys.readouterr().err


# --- locks across runners -------------------------------------------------------------------


def test_plan_resources_are_locked_through_a_ref_and_released(world):
    world.build()
    world.attest()
    assert execute(world) == 0
    ref = lock_ref("local/scratch")
    writes = [(w[0], w[1]) for w in world.gh.git.writes if w[1] == ref]
    assert writes[0] == ("create", ref) and writes[-1] == ("update", ref)
    lease = Lease.parse(world.gh.git.message(ref))
    assert lease is not None and lease.state == "released" and lease.plan_id == "local-hello"


def test_resource_held_by_another_runner_refuses_the_run(world, capsys):
    import time

    world.build()
    world.attest()
    other = Lease("local/scratch", "run-elsewhere", "other-plan", time.time() + 600)
    sha = world.gh.git.commit({"README.md": b"lock"}, [], other.message())
    world.gh.git.refs[lock_ref("local/scratch")] = sha
    assert execute(world) == 1
    assert not world.marker().exists()  # nothing ran
    assert "'local/scratch' is held by plan other-plan (run run-elsewhere" in world.gh.summary()
    assert world.gh.git.refs[lock_ref("local/scratch")] == sha  # untouched


def test_expired_lock_of_a_dead_runner_is_taken_over(world):
    import time

    world.build()
    world.attest()
    dead = Lease("local/scratch", "run-dead", "other-plan", time.time() - 3600)
    sha = world.gh.git.commit({"README.md": b"lock"}, [], dead.message())
    world.gh.git.refs[lock_ref("local/scratch")] = sha
    assert execute(world) == 0
    assert world.marker().read_text() == "hello"
    assert sha in world.gh.git.history(lock_ref("local/scratch"))  # moved forward by CAS


def test_local_locks_option_uses_no_refs(world):
    world.build()
    world.attest()
    assert execute(world, "--locks", "local") == 0
    assert not [w for w in world.gh.git.writes if w[1].startswith("refs/plangate/locks/")]


# --- keyless: the executor's own workflow identity ------------------------------------------


def _oidc_env(monkeypatch, event: str = "push", ref: str = "refs/heads/main") -> None:
    monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_URL", "https://token.actions.example/req")
    monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "request-token")
    monkeypatch.setenv("GITHUB_EVENT_NAME", event)
    monkeypatch.setenv("GITHUB_REF", ref)
    monkeypatch.setenv(
        "GITHUB_WORKFLOW_REF", "acme/ops/.github/workflows/plangate-execute.yml@refs/heads/main"
    )


def _ctx_args(monkeypatch):
    import argparse
    import os

    from app.cli.execute import _actions_context

    monkeypatch.delenv("PLANGATE_SIGNING_KEY_PATH", raising=False)
    args = argparse.Namespace(
        repo=None, before="a" * 40, after="b" * 40, attest_run="auto", signing_key=None
    )
    return args, _actions_context(args, os.environ)


def test_keyless_run_signing_pins_the_execute_workflow_identity(world, monkeypatch):
    import os

    import jwt
    import responses

    from app.cli.execute import _run_signer_factory

    _oidc_env(monkeypatch)
    args, ctx = _ctx_args(monkeypatch)
    signing = _run_signer_factory(args, os.environ, ctx)
    san = "https://github.com/acme/ops/.github/workflows/plangate-execute.yml@refs/heads/main"
    assert [i.san for i in signing.trust.identities] == [san]
    claims = {
        "iss": "https://token.actions.githubusercontent.com",
        "event_name": "push",
        "job_workflow_ref": "acme/ops/.github/workflows/plangate-execute.yml@refs/heads/main",
    }
    token = jwt.encode(claims, "not-a-real-key-0123456789abcdef0123", algorithm="HS256")
    with responses.RequestsMock() as rsps:
        rsps.get("https://token.actions.example/req", json={"value": token})
        signer = signing.make()  # the OIDC token is fetched only when a run is signed
    assert signer.kind == "sigstore"


def test_keyless_run_signing_is_refused_outside_the_default_branch(world, monkeypatch):
    import os

    from app.cli.execute import _run_signer_factory

    _oidc_env(monkeypatch, event="pull_request", ref="refs/pull/7/merge")
    args, ctx = _ctx_args(monkeypatch)
    with pytest.raises(AttestationError, match="pull_request"):
        _run_signer_factory(args, os.environ, ctx)
