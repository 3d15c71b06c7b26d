"""End to end through the CLI: keygen -> attest -> verify, and the ways verify says no."""

from __future__ import annotations

import base64
import json
import shutil
import stat
from pathlib import Path

import pytest

from app.cli import main

ROOT = Path(__file__).resolve().parent.parent.parent
PLAN = "plans/local-hello.yaml"


@pytest.fixture
def repo(tmp_path, monkeypatch) -> Path:
    (tmp_path / "plans").mkdir()
    shutil.copy(ROOT / PLAN, tmp_path / PLAN)
    shutil.copytree(ROOT / "policies", tmp_path / "policies")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("USER", "carol")
    return tmp_path


def test_local_attest_refuses_when_only_the_author_approves(repo, capsys):
    main(["keygen"])
    assert main(["attest", PLAN, "--approver", "carol"]) == 2
    err = capsys.readouterr().err
    assert "do not satisfy the policy's approval requirements" in err
    assert not (repo / ".plangate" / "attestations").exists()


def test_local_attest_refuses_without_policies(repo, capsys):
    main(["keygen"])
    shutil.rmtree(repo / "policies")
    assert main(["attest", PLAN, "--approver", "alice"]) == 2
    assert "policy directory not found" in capsys.readouterr().err


def _attestation(repo: Path) -> Path:
    (path,) = (repo / ".plangate" / "attestations" / "local").glob("*.dsse.json")
    return path


def test_local_key_end_to_end(repo, capsys):
    assert main(["keygen"]) == 0
    out = capsys.readouterr().out
    key = repo / ".plangate" / "keys" / "approval.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert "key id:" in out

    assert main(["attest", PLAN, "--approver", "alice", "--approver", "bob:sre"]) == 0
    assert "attestation written" in capsys.readouterr().out
    statement = json.loads(base64.b64decode(json.loads(_attestation(repo).read_bytes())["payload"]))
    assert statement["subject"][0]["name"] == PLAN
    assert [a["login"] for a in statement["predicate"]["approvers"]] == ["alice", "bob"]

    assert main(["verify", PLAN]) == 0
    out = capsys.readouterr().out
    assert "attestation verified" in out and "alice (local), bob (sre)" in out

    assert main(["verify", PLAN, "--attestation", str(_attestation(repo))]) == 0


def test_cli_verify_rejects_changed_plan(repo, capsys):
    main(["keygen"])
    main(["attest", PLAN, "--approver", "alice"])
    attestation = _attestation(repo)
    plan = repo / PLAN
    plan.write_text(plan.read_text().replace("hello from plangate", "rm -rf"))
    capsys.readouterr()
    assert main(["verify", PLAN]) == 1
    assert "FAILED check 'missing'" in capsys.readouterr().err
    assert main(["verify", PLAN, "--attestation", str(attestation)]) == 1
    err = capsys.readouterr().err
    assert "FAILED check 'digest'" in err and "What to do:" in err


def test_cli_verify_rejects_tampered_attestation(repo, capsys):
    main(["keygen"])
    main(["attest", PLAN, "--approver", "alice"])
    path = _attestation(repo)
    envelope = json.loads(path.read_bytes())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["predicate"]["approvers"][0]["login"] = "mallory"
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    path.write_text(json.dumps(envelope))
    capsys.readouterr()
    assert main(["verify", PLAN]) == 1
    assert "FAILED check 'signature'" in capsys.readouterr().err


def test_cli_verify_rejects_other_key(repo, capsys):
    main(["keygen"])
    main(["attest", PLAN, "--approver", "alice"])
    main(["keygen", "--out", "other.pem"])
    capsys.readouterr()
    assert main(["verify", PLAN, "--trusted-key", "other.pem.pub"]) == 1
    assert "FAILED check 'signer'" in capsys.readouterr().err


def test_cli_verify_binds_repository_and_pr(repo, capsys):
    main(["keygen"])
    main(["attest", PLAN, "--approver", "alice"])
    capsys.readouterr()
    pub = ".plangate/keys/approval.pem.pub"
    assert main(["verify", PLAN, "--repo", "acme/ops", "--trusted-key", pub]) == 1
    assert "FAILED check 'repository'" in capsys.readouterr().err
    assert main(["verify", PLAN, "--pr", "7"]) == 1
    assert "FAILED check 'pull_request'" in capsys.readouterr().err


def test_cli_verify_rejects_policy_change(repo, capsys):
    main(["keygen"])
    assert main(["attest", PLAN, "--approver", "alice"]) == 0
    budgets = repo / "policies" / "cost.yaml"
    budgets.write_text(budgets.read_text() + "\n# a comment changes no rule\n")
    capsys.readouterr()
    assert main(["verify", PLAN]) == 0, "a comment-only policy edit must keep the digest"
    approvals = repo / "policies" / "approvals.yaml"
    approvals.write_text(
        approvals.read_text().replace("require: {count: 1}", "require: {count: 2}", 1)
    )
    capsys.readouterr()
    assert main(["verify", PLAN]) == 1
    assert "FAILED check 'policy'" in capsys.readouterr().err


def test_cli_attest_needs_approver_and_key(repo, capsys):
    assert main(["attest", PLAN]) == 2
    assert "no --approver" in capsys.readouterr().err
    assert main(["attest", PLAN, "--approver", "alice"]) == 3
    assert "cannot read the signing key" in capsys.readouterr().err
    main(["keygen"])
    assert main(["attest", PLAN, "--approver", "not a login!"]) == 2
    assert main(["attest", PLAN, "--approver", "alice", "--ttl", "forever"]) == 2


def test_cli_sigstore_backend_refuses_outside_actions(repo, capsys, monkeypatch):
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    argv = ["attest", PLAN, "--approver", "alice", "--backend", "sigstore"]
    assert main(argv) == 2
    assert "needs --repo OWNER/NAME" in capsys.readouterr().err
    assert main([*argv, "--repo", "acme/ops"]) == 2
    assert "only inside GitHub Actions" in capsys.readouterr().err


def test_cli_sigstore_backend_refuses_pull_request_review(repo, capsys, monkeypatch):
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_EVENT_NAME", "pull_request_review")
    monkeypatch.setenv("GITHUB_REF", "refs/pull/7/merge")
    argv = ["attest", PLAN, "--approver", "alice", "--backend", "sigstore", "--repo", "acme/ops"]
    assert main(argv) == 3
    assert "refusing to sign" in capsys.readouterr().err


def test_cli_never_trusts_a_key_from_the_checkout_for_a_repository(repo, capsys):
    """A PR could add .plangate/keys/approval.pem.pub; for a repository trust must be explicit."""
    main(["keygen"])
    main(["attest", PLAN, "--approver", "alice", "--repo", "acme/ops"])
    capsys.readouterr()
    assert main(["verify", PLAN, "--repo", "acme/ops"]) == 2
    assert "needs explicit trusted signers" in capsys.readouterr().err
    pub = ".plangate/keys/approval.pem.pub"
    assert main(["verify", PLAN, "--repo", "acme/ops", "--trusted-key", pub]) == 0
