"""``plangate explain PLAN --approved-by``: the gate simulated against the repo's policies."""

from __future__ import annotations

import json

import pytest

from app.cli import main

PLAN = "plans/rotate-db-credentials.yaml"


@pytest.fixture(autouse=True)
def _in_repo(repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)


def test_explain_approved_by_satisfied(capsys):
    code = main(["explain", PLAN, "--author", "erin", "--approved-by", "carol,alice,dan,ivan,judy"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "approval gate (simulated):" in out
    assert "SATISFIED: all 4 approval requirements satisfied" in out


def test_explain_approved_by_author_does_not_count(capsys):
    code = main(["explain", PLAN, "--author", "judy", "--approved-by", "carol,alice,dan,ivan,judy"])
    out = capsys.readouterr().out
    assert code == 1
    assert "PENDING" in out
    assert "approval by @judy on 0000000 does not count: @judy opened the PR" in out


def test_explain_approved_by_json(capsys):
    code = main(
        ["explain", PLAN, "--author", "erin", "--approved-by", "@carol", "--format", "json"]
    )
    gate = json.loads(capsys.readouterr().out)["approval_gate"]
    assert code == 1
    assert gate["status"] == "pending"
    assert [a["login"] for n in gate["requirements"] for a in n["counted"]] == ["carol"]


def test_explain_team_flag_validated(capsys):
    code = main(["explain", PLAN, "--approved-by", "carol", "--team", "nonsense"])
    assert code == 2
    assert "expected ORG/TEAM=login,login" in capsys.readouterr().err


def test_explain_team_flag_resolves_github_team(capsys):
    # zed is in no policy member list, only in the GitHub team acme/security
    args = ["explain", PLAN, "--author", "erin", "--approved-by", "carol,alice,dan,zed,bob"]
    assert main(args) == 1
    capsys.readouterr()
    assert main([*args, "--team", "acme/security=zed"]) == 0, capsys.readouterr().out
