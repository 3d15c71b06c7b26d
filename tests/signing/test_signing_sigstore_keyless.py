"""Keyless signing of our own approval predicate, end to end, against a local fake Sigstore.

sigstore-python's real ``Signer`` (Fulcio CSR, SCT check, DSSE signing, Rekor entry) and real
``Verifier`` (chain, SCT, identity policy, inclusion proof, checkpoint, SET, DSSE signature, entry
consistency) run against the in-process fake in ``fake_sigstore.py``; then our verification path
(``verify_for_execution``) accepts the bundle exactly as it accepts a local-key envelope.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
import sigstore

from app.approvals.attest import (
    INTOTO_PAYLOAD_TYPE,
    Approver,
    BaseRef,
    PullRequestRef,
    RepositoryRef,
    build_statement,
)
from app.approvals.verify import verify_for_execution
from app.errors import AttestationError
from app.signing import Trust, github_workflow_identity
from app.signing.sigstore_backend import SigstoreSigner, SigstoreVerifier

fake_sigstore = pytest.importorskip("fake_sigstore")

pytestmark = pytest.mark.skipif(
    sigstore.__version__ != fake_sigstore.SIGSTORE_VERSION,
    reason="the fake Sigstore uses private sigstore-python APIs of one pinned version",
)

REPO = "acme/ops"
WORKFLOW_REF = f"{REPO}/.github/workflows/plangate-approve.yml@refs/heads/main"
IDENTITY = github_workflow_identity(REPO, "plangate-approve.yml", "main", repository_id=1296269)
HEAD = "d4" * 20
DIGEST = "sha256:" + "a1" * 32
POLICY = "sha256:" + "c3" * 32


@pytest.fixture(scope="module")
def instance():
    return fake_sigstore.FakeSigstore()


@pytest.fixture(scope="module")
def statement():
    now = datetime.now(UTC)
    return build_statement(
        plans=[("plans/db.yaml", DIGEST, None)],
        repository=RepositoryRef(name=REPO, id=1296269),
        pull_request=PullRequestRef(number=42, url=f"https://github.com/{REPO}/pull/42"),
        base=BaseRef(ref="refs/heads/main", sha="e5" * 20),
        head_sha=HEAD,
        approvers=[
            Approver(
                login="alice",
                reviewId=80,
                commit=HEAD,
                approvedAt=now - timedelta(minutes=1),
                requirement="dba-review",
            )
        ],
        policy_digest=POLICY,
        evaluated_at=now,
        ttl=timedelta(hours=1),
    )


@pytest.fixture(scope="module")
def bundle(instance, statement) -> bytes:
    signer = SigstoreSigner(
        identity_token=fake_sigstore.actions_token(WORKFLOW_REF),
        expected=IDENTITY,
        signing_context=instance.signing_context(),
    )
    return signer.sign(INTOTO_PAYLOAD_TYPE, statement.payload())


def _verify(instance, document: bytes, trust: Trust | None = None):
    return verify_for_execution(
        "plans/db.yaml",
        DIGEST,
        document,
        trust or Trust(identities=(IDENTITY,)),
        REPO,
        42,
        datetime.now(UTC),
        expected_policy_digest=POLICY,
        sigstore_verifier=SigstoreVerifier(trusted_roots={"production": instance.trusted_root()}),
    )


def test_keyless_bundle_of_our_predicate_verifies(instance, bundle, statement):
    data = json.loads(bundle)
    assert data["mediaType"].startswith("application/vnd.dev.sigstore.bundle")
    assert "keyid" not in data["dsseEnvelope"]["signatures"][0]
    assert base64.b64decode(data["dsseEnvelope"]["payload"]) == statement.payload()
    result = _verify(instance, bundle)
    assert result.signer.kind == "sigstore"
    assert result.signer.id == IDENTITY.san
    assert result.approvers == ("alice",)


def test_keyless_bundle_with_other_identity_rejected(instance, bundle):
    other = github_workflow_identity(REPO, "other.yml", "main")
    with pytest.raises(AttestationError) as info:
        _verify(instance, bundle, Trust(identities=(other,)))
    assert info.value.check == "signer"


def test_keyless_bundle_from_recreated_repository_rejected(instance, bundle):
    recreated = IDENTITY.model_copy(update={"repository_id": "999"})
    with pytest.raises(AttestationError) as info:
        _verify(instance, bundle, Trust(identities=(recreated,)))
    assert info.value.check == "signer"


def test_tampered_keyless_bundle_rejected(instance, bundle):
    data = json.loads(bundle)
    statement = json.loads(base64.b64decode(data["dsseEnvelope"]["payload"]))
    statement["predicate"]["approvers"][0]["login"] = "mallory"
    data["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    with pytest.raises(AttestationError) as info:
        _verify(instance, json.dumps(data).encode())
    assert info.value.check == "signature"


def test_keyless_bundle_rejected_by_another_trust_root(bundle):
    with pytest.raises(AttestationError) as info:
        _verify(fake_sigstore.FakeSigstore(), bundle)
    assert info.value.check == "signature"


def test_keyless_bundle_for_other_pr_rejected_by_common_checks(instance, bundle):
    with pytest.raises(AttestationError) as info:
        verify_for_execution(
            "plans/db.yaml",
            DIGEST,
            bundle,
            Trust(identities=(IDENTITY,)),
            REPO,
            43,
            datetime.now(UTC),
            sigstore_verifier=SigstoreVerifier(
                trusted_roots={"production": instance.trusted_root()}
            ),
        )
    assert info.value.check == "pull_request"
