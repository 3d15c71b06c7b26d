"""Verification before execution: one named test per way an attestation must be rejected."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_attest_support import (
    DIGEST,
    HEAD,
    NOW,
    OTHER_DIGEST,
    PLAN,
    POLICY,
    REPO,
    new_key,
    pr_statement,
    trust_for,
)

from app.approvals.attest import INTOTO_PAYLOAD_TYPE, ApprovalStatement
from app.approvals.verify import CHECKS, VerifiedApproval, verify_for_execution
from app.errors import AttestationError
from app.signing import Trust
from app.signing.dsse import Envelope
from app.signing.local_key import LocalKeySigner

KEY = new_key()
TRUST = trust_for(KEY)


def signed(statement: ApprovalStatement | None = None, key=KEY) -> bytes:
    statement = statement or pr_statement()
    return LocalKeySigner(key).sign(INTOTO_PAYLOAD_TYPE, statement.payload())


SIGNED = LocalKeySigner(KEY).sign(INTOTO_PAYLOAD_TYPE, pr_statement().payload())


def verify(document: bytes, **overrides) -> VerifiedApproval:
    args = {
        "plan_path": PLAN,
        "plan_digest": DIGEST,
        "envelope_bytes": document,
        "trust": TRUST,
        "expected_repo": REPO,
        "expected_pr": 42,
        "now": NOW + timedelta(hours=1),
        "expected_policy_digest": POLICY,
    }
    args.update(overrides)
    return verify_for_execution(**args)


def rejected(document: bytes, check: str, **overrides) -> AttestationError:
    with pytest.raises(AttestationError) as info:
        verify(document, **overrides)
    assert info.value.check == check, info.value.diagnostics()
    assert check in CHECKS
    assert "What to do:" in info.value.diagnostics()
    return info.value


def resign_payload(document: bytes, mutate) -> bytes:
    """Change the payload of an envelope *without* re-signing (an attacker's edit)."""
    data = json.loads(document)
    statement = json.loads(base64.b64decode(data["payload"]))
    mutate(statement)
    data["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    return json.dumps(data).encode()


def test_valid_attestation_verifies():
    result = verify(signed())
    assert result.approvers == ("alice", "bob")
    assert result.signer.kind == "key"
    assert result.signer.id == TRUST.keys[0].keyid
    assert result.plan_digest == DIGEST
    assert "acme/ops PR #42" in result.summary()


def test_tampered_statement_rejected():
    def add_approver(statement):
        statement["predicate"]["approvers"][0]["login"] = "mallory"

    error = rejected(resign_payload(signed(), add_approver), "signature")
    assert "does not verify" in error.message


def test_tampered_payload_type_rejected():
    data = json.loads(signed())
    data["payloadType"] = "application/json"
    rejected(json.dumps(data).encode(), "signature")


def test_wrong_key_rejected():
    error = rejected(signed(key=new_key()), "signer")
    assert "untrusted key" in error.message


def test_forged_keyid_rejected():
    """Naming a trusted key id does not help: the trusted key itself must verify."""
    data = json.loads(signed(key=new_key()))
    data["signatures"][0]["keyid"] = TRUST.keys[0].keyid
    rejected(json.dumps(data).encode(), "signature")


def test_signature_without_keyid_checked_against_every_trusted_key():
    data = json.loads(signed())
    del data["signatures"][0]["keyid"]
    assert verify(json.dumps(data).encode()).signer.id == TRUST.keys[0].keyid
    data = json.loads(signed(key=new_key()))
    del data["signatures"][0]["keyid"]
    rejected(json.dumps(data).encode(), "signature")


def test_one_trusted_key_among_several_is_enough():
    other = new_key()
    assert verify(signed(key=other), trust=trust_for(KEY, other)).signer.name == "key1"


def test_empty_trust_fails_closed():
    rejected(signed(), "signer", trust=Trust())


def test_untrusted_identity_rejected_for_local_only_trust():
    """A sigstore-only trust list accepts no local key, however valid its signature."""
    from app.signing import github_workflow_identity

    trust = Trust(identities=(github_workflow_identity(REPO, "approve.yml", "main"),))
    rejected(signed(), "signer", trust=trust)


def test_digest_mismatch_rejected():
    error = rejected(signed(), "digest", plan_digest=OTHER_DIGEST)
    assert "changed after it was approved" in error.diagnostics()


def test_expired_rejected():
    rejected(signed(), "expiry", now=NOW + timedelta(days=1))
    rejected(signed(), "expiry", now=NOW + timedelta(days=30))
    assert verify(signed(), now=NOW + timedelta(days=1) - timedelta(seconds=1))


def test_future_dated_attestation_rejected():
    rejected(signed(), "expiry", now=NOW - timedelta(hours=1))
    assert verify(signed(), now=NOW - timedelta(minutes=4))  # within the clock skew


def test_replayed_from_another_pr_rejected():
    error = rejected(signed(pr_statement(pr=41)), "pull_request")
    assert "PR #41" in error.message and "#42" in error.message


def test_replayed_from_another_repo_rejected():
    rejected(signed(pr_statement(repo="acme/other")), "repository")


def test_replayed_from_renamed_repo_rejected_by_id():
    rejected(signed(), "repository", expected_repo_id=999)
    assert verify(signed(), expected_repo_id=1296269)


def test_replayed_from_another_plan_rejected():
    statement = pr_statement(plans=[("plans/cache.yaml", DIGEST, None)])
    error = rejected(signed(statement), "subject")
    assert "plans/cache.yaml" in error.message


def test_multi_plan_attestation_covers_each_plan():
    statement = pr_statement(plans=[(PLAN, DIGEST, None), ("plans/b.yaml", OTHER_DIGEST, None)])
    document = signed(statement)
    assert verify(document).plan_path == PLAN
    assert verify(document, plan_path="plans/b.yaml", plan_digest=OTHER_DIGEST)
    rejected(document, "digest", plan_path="plans/b.yaml", plan_digest=DIGEST)


def test_head_sha_mismatch_rejected():
    rejected(signed(), "head_sha", expected_head_sha="99" * 20)
    assert verify(signed(), expected_head_sha=HEAD)


def test_policy_digest_mismatch_rejected():
    rejected(signed(), "policy", expected_policy_digest="sha256:" + "00" * 32)


def test_changed_policy_that_still_accepts_the_approvals_passes():
    seen = []

    def accepts(statement: ApprovalStatement) -> bool:
        seen.append(statement.predicate.approvers)
        return True

    assert verify(signed(), expected_policy_digest="sha256:" + "00" * 32, policy_accepts=accepts)
    assert len(seen) == 1
    rejected(
        signed(),
        "policy",
        expected_policy_digest="sha256:" + "00" * 32,
        policy_accepts=lambda s: False,
    )


def test_local_attestation_cannot_authorise_a_pull_request():
    from app.approvals.attest import Approver, RepositoryRef, build_statement

    statement = build_statement(
        plans=[(PLAN, DIGEST, None)],
        repository=RepositoryRef(name=REPO),
        approvers=[Approver(login="alice", approvedAt=NOW, requirement="local")],
        policy_digest=POLICY,
        evaluated_at=NOW,
        ttl=timedelta(days=1),
    )
    rejected(signed(statement), "pull_request")
    assert verify(signed(statement), expected_pr=None)


def test_wrong_payload_type_rejected():
    document = LocalKeySigner(KEY).sign("application/json", pr_statement().payload())
    rejected(document, "payload_type")


def test_foreign_predicate_type_rejected():
    data = json.loads(pr_statement().payload())
    data["predicateType"] = "https://slsa.dev/provenance/v1"
    document = LocalKeySigner(KEY).sign(INTOTO_PAYLOAD_TYPE, json.dumps(data).encode())
    rejected(document, "statement")


def test_invalid_statement_rejected_even_when_signed():
    data = json.loads(pr_statement().payload())
    data["predicate"]["expiresAt"] = data["predicate"]["evaluatedAt"]
    document = LocalKeySigner(KEY).sign(INTOTO_PAYLOAD_TYPE, json.dumps(data).encode())
    error = rejected(document, "statement")
    assert "expiresAt must be after evaluatedAt" in error.message


@pytest.mark.parametrize(
    "document",
    [
        b"",
        b"not json",
        b"[]",
        b'{"payloadType": "x"}',
        b'{"payloadType":"x","payload":"!!","signatures":[{"sig":"AA=="}]}',
    ],
)
def test_malformed_documents_rejected(document: bytes):
    rejected(document, "format")


def test_envelope_round_trip_is_stable():
    document = signed()
    assert Envelope.from_json(document).to_json().encode() == document


def test_verification_module_does_not_load_sigstore_or_network_clients():
    """The executor's gate imports no I/O adapter until a keyless bundle is actually verified."""
    import subprocess
    import sys

    code = (
        "import sys, app.approvals.verify, app.approvals.attest\n"
        "bad = sorted(m for m in ('sigstore', 'requests', 'httpx', 'github', 'git') "
        "if m in sys.modules)\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_change_to_a_signed_attestation_is_rejected(data):
    """Flip any byte of the signed payload or signature: never accepted, always a named check."""
    document = json.loads(SIGNED)
    field = data.draw(st.sampled_from(["payload", "sig"]))
    holder = document if field == "payload" else document["signatures"][0]
    raw = bytearray(base64.b64decode(holder[field]))
    index = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    raw[index] ^= data.draw(st.integers(min_value=1, max_value=255))
    holder[field] = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(AttestationError) as info:
        verify(json.dumps(document).encode())
    assert info.value.check in {"signature", "format"}
