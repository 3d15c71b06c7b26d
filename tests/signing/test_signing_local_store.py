"""The local approval gate: what the executor calls before mutating a local plan."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from app.approvals.attest import INTOTO_PAYLOAD_TYPE, Approver, RepositoryRef, build_statement
from app.errors import AttestationError
from app.plan.loader import load_plan
from app.signing import Trust, TrustedKey
from app.signing.local_key import LocalKeySigner
from app.signing.local_store import LocalAttestationGate, read_local, write_local

ROOT = Path(__file__).resolve().parent.parent.parent
PLAN = "plans/local-hello.yaml"
NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
POLICY = "sha256:" + "c3" * 32
KEY = ec.generate_private_key(ec.SECP256R1())
TRUST = Trust(
    keys=(
        TrustedKey(
            public_key_pem=KEY.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode(),
            name="local",
        ),
    )
)


@pytest.fixture
def loaded():
    return load_plan(ROOT / PLAN)


def _approve(directory: Path, digest: str) -> Path:
    statement = build_statement(
        plans=[(PLAN, digest, None)],
        repository=RepositoryRef(name="local"),
        approvers=[Approver(login="alice", approvedAt=NOW, requirement="local")],
        policy_digest=POLICY,
        evaluated_at=NOW,
        ttl=timedelta(days=1),
    )
    document = LocalKeySigner(KEY).sign(INTOTO_PAYLOAD_TYPE, statement.payload())
    return write_local(directory, digest, "dsse", document)


def _gate(tmp_path: Path, now: datetime = NOW + timedelta(hours=1)) -> LocalAttestationGate:
    return LocalAttestationGate(
        plan_path=PLAN,
        trust=TRUST,
        clock=lambda: now,
        directory=tmp_path,
        expected_policy_digest=POLICY,
    )


def test_local_gate_passes_an_approved_plan(tmp_path, loaded):
    path = _approve(tmp_path, loaded.digest)
    assert path.name == loaded.digest.removeprefix("sha256:") + ".dsse.json"
    gate = _gate(tmp_path)
    summary = gate.verify(loaded.plan, loaded.digest)
    assert "approved by alice (local)" in summary
    assert gate.last is not None and gate.last.signer.name == "local"


def test_mutation_refused_without_attestation(tmp_path, loaded):
    with pytest.raises(AttestationError) as info:
        _gate(tmp_path).verify(loaded.plan, loaded.digest)
    assert info.value.check == "missing"
    assert "approved again" in info.value.diagnostics()


def test_local_gate_refuses_expired_approval(tmp_path, loaded):
    _approve(tmp_path, loaded.digest)
    with pytest.raises(AttestationError) as info:
        _gate(tmp_path, now=NOW + timedelta(days=2)).verify(loaded.plan, loaded.digest)
    assert info.value.check == "expiry"


def test_local_gate_refuses_attestation_of_another_digest_under_this_name(tmp_path, loaded):
    """A file copied to this plan's digest name still attests the other digest."""
    other = "sha256:" + "0" * 64
    source = _approve(tmp_path, other)
    target = tmp_path / "local" / (loaded.digest.removeprefix("sha256:") + ".dsse.json")
    target.write_bytes(source.read_bytes())
    with pytest.raises(AttestationError) as info:
        _gate(tmp_path).verify(loaded.plan, loaded.digest)
    assert info.value.check == "digest"


def test_read_local_returns_what_write_local_stored(tmp_path, loaded):
    path = write_local(tmp_path, loaded.digest, "dsse", b"{}")
    assert read_local(tmp_path, loaded.digest) == (path, b"{}")
    assert not list(tmp_path.rglob("*.tmp"))
