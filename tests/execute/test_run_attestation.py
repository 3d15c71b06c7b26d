"""Run attestation: the statement's fields, its signature, and ``plangate run`` writing it."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.approvals.run_attest import (
    RUN_PREDICATE_TYPE,
    approval_digest,
    run_attestation_path,
    sign_run_statement,
    statement_from_result,
)
from app.cli import main
from app.errors import AttestationError
from app.execute.result import CompensationOutcome, RunResult, StepOutcome
from app.signing import Trust, TrustedKey, verify_signed_document
from app.signing.local_key import LocalKeySigner, generate_private_key

ROOT = Path(__file__).resolve().parents[2]
PLAN = "plans/local-hello.yaml"
DIGEST = "sha256:" + "ab" * 32
T0 = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)


def _result() -> RunResult:
    result = RunResult("db-migrate", DIGEST, "run42", "compensated", "step 'b' failed: boom")
    result.steps["a"] = StepOutcome("a", "succeeded", attempts=1)
    result.steps["b"] = StepOutcome("b", "failed", attempts=3, error="boom")
    result.compensations = [CompensationOutcome("a", "succeeded", "shell", 1)]
    result.usage = {"api_calls": 4, "money": "0.10"}
    return result


def _statement(approval: str | None = None):
    return statement_from_result(
        _result(),
        plan_path="plans/db.yaml",
        started_at=T0,
        finished_at=T0 + timedelta(seconds=90),
        approval=approval,
    )


def test_statement_fields():
    approval = approval_digest(b'{"payloadType": "x"}')
    doc = _statement(approval).to_json_dict()
    assert doc["_type"] == "https://in-toto.io/Statement/v1"
    assert doc["predicateType"] == RUN_PREDICATE_TYPE
    assert doc["subject"] == [{"name": "plans/db.yaml", "digest": {"sha256": "ab" * 32}}]
    pred = doc["predicate"]
    assert pred["approvalDigest"] == approval and approval.startswith("sha256:")
    assert pred["runId"] == "run42" and pred["planId"] == "db-migrate"
    assert pred["status"] == "compensated"
    assert pred["steps"] == [
        {"id": "a", "status": "succeeded", "attempts": 1},
        {"id": "b", "status": "failed", "attempts": 3},
    ]
    assert pred["compensations"] == [
        {"step": "a", "status": "succeeded", "action": "shell", "attempts": 1, "error": None}
    ]
    assert pred["usage"] == {"api_calls": 4, "money": "0.10"}
    assert pred["startedAt"] == "2026-11-25T03:00:00.000000Z"
    assert pred["finishedAt"] == "2026-11-25T03:01:30.000000Z"


def test_payload_is_canonical_json():
    payload = _statement().payload()
    assert (
        payload == json.dumps(json.loads(payload), sort_keys=True, separators=(",", ":")).encode()
    )


def test_invalid_values_are_refused():
    with pytest.raises(ValueError):
        statement_from_result(
            _result(), plan_path="p.yaml", started_at=T0, finished_at=T0 - timedelta(1),
            approval=None,
        )  # fmt: skip
    with pytest.raises(ValueError):
        run_attestation_path(DIGEST, "../escape")
    assert run_attestation_path(DIGEST, "run42") == f"local/{'ab' * 32}.run-run42.dsse.json"


def test_signature_verifies_with_the_key_and_not_another():
    key = generate_private_key()
    signed = sign_run_statement(_statement(), LocalKeySigner(key))
    trust = Trust(keys=(TrustedKey(public_key_pem=_pem(key), name="k"),))
    verified = verify_signed_document(signed, trust)
    assert json.loads(verified.payload)["predicateType"] == RUN_PREDICATE_TYPE
    other = Trust(keys=(TrustedKey(public_key_pem=_pem(generate_private_key()), name="o"),))
    with pytest.raises(AttestationError):
        verify_signed_document(signed, other)


def _pem(key) -> str:
    from cryptography.hazmat.primitives import serialization

    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture
def repo(tmp_path, monkeypatch) -> Path:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "plans").mkdir()
    shutil.copy(ROOT / PLAN, tmp_path / PLAN)
    shutil.copytree(ROOT / "policies", tmp_path / "policies")
    (tmp_path / ".plangate").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("USER", "carol")
    monkeypatch.delenv("PLANGATE_DATA_DIR", raising=False)
    return tmp_path


def test_plangate_run_writes_a_signed_run_attestation(repo, capsys):
    assert main(["keygen"]) == 0
    assert main(["attest", PLAN, "--approver", "alice"]) == 0
    capsys.readouterr()
    assert main(["run", PLAN, "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    digest, run_id = out["digest"], out["run_id"]
    hex_digest = digest.removeprefix("sha256:")
    local = repo / ".plangate" / "attestations" / "local"
    approval = local / f"{hex_digest}.dsse.json"
    run_doc = local / f"{hex_digest}.run-{run_id}.dsse.json"
    assert run_doc.exists()

    pub = (repo / ".plangate" / "keys" / "approval.pem.pub").read_text()
    verified = verify_signed_document(
        run_doc.read_bytes(), Trust(keys=(TrustedKey(public_key_pem=pub, name="local"),))
    )
    statement = json.loads(verified.payload)
    assert statement["predicateType"] == RUN_PREDICATE_TYPE
    assert statement["subject"] == [{"name": PLAN, "digest": {"sha256": hex_digest}}]
    pred = statement["predicate"]
    assert pred["runId"] == run_id and pred["status"] == "succeeded"
    # tied to the exact approval document the run was gated on
    assert pred["approvalDigest"] == approval_digest(approval.read_bytes())
    assert {s["status"] for s in pred["steps"]} == {"succeeded"}
    envelope = json.loads(run_doc.read_text())
    assert base64.b64decode(envelope["payload"]) == verified.payload

    # a re-run of the finished run does nothing and leaves the attestation alone
    before = run_doc.read_bytes()
    assert main(["run", PLAN, "--format", "json"]) == 0
    assert run_doc.read_bytes() == before


def test_plangate_run_without_a_key_is_not_attested(repo, capsys):
    assert main(["run", PLAN, "--format", "json", "--unsafe-no-approval"]) == 0
    assert not (repo / ".plangate" / "attestations").exists()


# --- verification: plangate verify --run, tampering, the approval binding, the audit event ------


def _run_attested(repo, capsys) -> tuple[str, str, Path, Path]:
    assert main(["keygen"]) == 0
    assert main(["attest", PLAN, "--approver", "alice"]) == 0
    capsys.readouterr()
    assert main(["run", PLAN, "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    local = repo / ".plangate" / "attestations" / "local"
    hex_digest = out["digest"].removeprefix("sha256:")
    run_doc = local / f"{hex_digest}.run-{out['run_id']}.dsse.json"
    return out["digest"], out["run_id"], run_doc, local / f"{hex_digest}.dsse.json"


def test_plangate_verify_run_checks_what_ran_and_who_approved(repo, capsys):
    _, run_id, _, _ = _run_attested(repo, capsys)
    assert main(["verify", PLAN, "--run", run_id]) == 0
    out = capsys.readouterr().out
    assert "attestation verified" in out  # who approved
    assert f"run {run_id} verified: status succeeded" in out  # what ran
    assert "(checked)" in out  # bound to the approval document just verified


def test_tampered_run_attestation_is_rejected(repo, capsys):
    _, run_id, run_doc, _ = _run_attested(repo, capsys)
    envelope = json.loads(run_doc.read_text())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["predicate"]["status"] = "succeeded"
    statement["predicate"]["steps"] = []  # hide what ran
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    run_doc.write_text(json.dumps(envelope))
    assert main(["verify", PLAN, "--run", run_id]) == 1
    assert "FAILED check 'signature'" in capsys.readouterr().err


def test_run_attestation_must_name_the_approval_it_ran_under(repo, capsys):
    _, run_id, _, approval = _run_attested(repo, capsys)
    # a second, different approval replaces the first: the run was not gated on this one
    assert main(["attest", PLAN, "--approver", "bob", "--ttl", "2d"]) == 0
    capsys.readouterr()
    assert approval.exists()
    assert main(["verify", PLAN, "--run", run_id]) == 1
    err = capsys.readouterr().err
    assert "FAILED check 'approval'" in err and "names approval sha256:" in err


def test_run_attestation_of_another_plan_digest_is_rejected(repo, capsys):
    digest, run_id, run_doc, _ = _run_attested(repo, capsys)
    from app.approvals.run_verify import verify_run_attestation

    pub = (repo / ".plangate" / "keys" / "approval.pem.pub").read_text()
    trust = Trust(keys=(TrustedKey(public_key_pem=pub, name="local"),))
    ok = verify_run_attestation(run_doc.read_bytes(), trust, plan_digest=digest, run_id=run_id)
    assert ok.predicate.correlation_id == run_id
    with pytest.raises(AttestationError, match="not sha256:") as info:
        verify_run_attestation(run_doc.read_bytes(), trust, plan_digest="sha256:" + "0" * 64)
    assert info.value.check == "digest"
    with pytest.raises(AttestationError) as info:
        verify_run_attestation(run_doc.read_bytes(), trust, plan_digest=digest, run_id="other")
    assert info.value.check == "run"
    # an approval statement is not a run statement, even when signed by the same key
    approval_doc = (
        repo
        / ".plangate"
        / "attestations"
        / "local"
        / f"{digest.removeprefix('sha256:')}.dsse.json"
    ).read_bytes()
    with pytest.raises(AttestationError) as info:
        verify_run_attestation(approval_doc, trust, plan_digest=digest)
    assert info.value.check == "statement"


def test_missing_run_attestation_names_where_it_looked(repo, capsys):
    _run_attested(repo, capsys)
    assert main(["verify", PLAN, "--run", "nosuchrun"]) == 1
    err = capsys.readouterr().err
    assert "FAILED check 'missing'" in err and ".run-nosuchrun." in err


def test_run_attested_event_ties_the_audit_trail_to_the_document(repo, capsys):
    import hashlib

    from app.audit.git_store import GitAuditStore

    _, run_id, run_doc, _ = _run_attested(repo, capsys)
    store = GitAuditStore(repo)
    try:
        events = [e for e in store.events() if e.correlation_id == run_id]
        assert store.verify().ok
    finally:
        store.close()
    (attested,) = [e for e in events if e.type == "run.attested"]
    assert events[-1].type == "run.attested"  # after run.finished
    expected = "sha256:" + hashlib.sha256(run_doc.read_bytes()).hexdigest()
    assert attested.payload["attestation_digest"] == expected
    assert attested.payload["location"].endswith(run_doc.name)
