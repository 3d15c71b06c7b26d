"""The embedded default end to end: keygen -> attest (policy + gate) -> run -> audit verify.

This is the README's first command as a test, plus the ways it must say no. Runs in a fresh git
repository under tmp_path, with the shipped policies and the local example plan.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from app.cli import main

ROOT = Path(__file__).resolve().parent.parent
PLAN = "plans/local-hello.yaml"


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


def _run(*extra: str) -> int:
    return main(["run", PLAN, "--format", "json", *extra])


def test_mutation_refused_without_attestation(repo, capsys):
    assert main(["keygen"]) == 0
    capsys.readouterr()
    assert _run() == 1
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "refused"
    assert "no approval attestation" in result["reason"]
    assert not (repo / ".plangate" / "hello.txt").exists()


def test_author_approval_never_counts_locally(repo, capsys):
    main(["keygen"])
    assert main(["attest", PLAN, "--approver", "carol"]) == 2
    assert "do not satisfy" in capsys.readouterr().err
    assert _run() == 1
    assert json.loads(capsys.readouterr().out)["status"] == "refused"


def test_approved_local_plan_runs_and_is_audited(repo, capsys):
    main(["keygen"])
    assert main(["keygen"]) == 0, "keygen keeps an existing key (the README command is re-runnable)"
    assert main(["attest", PLAN, "--approver", "alice"]) == 0
    capsys.readouterr()
    assert _run() == 0
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "succeeded"
    assert (repo / ".plangate" / "hello.txt").read_text() == "hello"
    assert main(["audit", "verify"]) == 0
    capsys.readouterr()
    assert main(["audit", "list", "--format", "json"]) == 0
    events = json.loads(capsys.readouterr().out)
    kinds = [e["type"] for e in (events["events"] if isinstance(events, dict) else events)]
    assert "run.started" in kinds and "run.finished" in kinds and "step.succeeded" in kinds


def test_plan_changed_after_approval_is_refused(repo, capsys):
    main(["keygen"])
    main(["attest", PLAN, "--approver", "alice"])
    plan = repo / PLAN
    plan.write_text(plan.read_text().replace("hello from plangate", "goodbye"))
    capsys.readouterr()
    assert _run() == 1
    assert json.loads(capsys.readouterr().out)["status"] == "refused"


def test_policy_denial_stops_the_run_before_anything_starts(repo, capsys):
    plan = repo / PLAN
    plan.write_text(plan.read_text().replace("environment: local", "environment: production"))
    assert _run("--unsafe-no-approval") == 1
    err = capsys.readouterr().err
    assert "denied by" in err and "policies/" in err
    assert not (repo / ".plangate" / "hello.txt").exists()


def test_missing_policies_fail_closed(repo, capsys):
    shutil.rmtree(repo / "policies")
    assert _run("--unsafe-no-approval") == 2
    assert "policies" in capsys.readouterr().err
