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
