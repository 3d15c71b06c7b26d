"""`plangate check` with policy and cost (exit 1 on deny), `plangate explain`, and `--base`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import git
import pytest

from app.cli import main

ROOT = Path(__file__).resolve().parent.parent

SHELL_IN_PROD = """\
apiVersion: plangate.dev/v1
kind: Plan
id: prod-shell
title: Run a script in production
team: platform
environment: production
resources: [k8s/production/api]
steps:
  - id: restart
    action: shell
    with: {run: [kubectl, rollout, restart, deploy/api]}
    compensate: {action: noop}
"""


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


@pytest.fixture
def policies(tmp_path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", target)
    return target


def test_example_plans_pass_with_example_policies(capsys):
    rc, out, _ = run(capsys, "check", "--policies", str(ROOT / "policies"), str(ROOT / "plans"))
    assert rc == 0, out
    assert "policy: 5 allowed, 0 denied" in out


def test_check_exit_1_on_deny_text(tmp_path, policies, capsys):
    path = tmp_path / "prod-shell.yaml"
    path.write_text(SHELL_IN_PROD)
    rc, out, _ = run(capsys, "check", "--policies", str(policies), str(path))
    assert rc == 1
    assert f"deny  {path}  prod-shell" in out
    assert (
        f"deny  no-shell-in-production ({policies}/safety.yaml:6): step 'restart': shell steps "
        "are not allowed in production"
    ) in out
    assert "policy: 0 allowed, 1 denied" in out


def test_check_exit_1_on_deny_json(tmp_path, policies, capsys):
    path = tmp_path / "prod-shell.yaml"
    path.write_text(SHELL_IN_PROD)
    rc, out, _ = run(capsys, "check", "--format", "json", "--policies", str(policies), str(path))
    assert rc == 1
    report = json.loads(out)
    assert report["ok"] is False and report["exit_code"] == 1
    assert report["policy"]["denied"] == [str(path)]
    (decision,) = report["policy"]["decisions"]
    assert decision["verdict"] == "deny"
    assert [d["rule"] for d in decision["denials"]] == ["no-shell-in-production"]
    assert decision["denials"][0]["source"] == f"{policies}/safety.yaml:6"
    assert decision["risk"]["level"] in ("low", "medium", "high", "critical")
    assert report["cost"]["plans"][0]["money"] == "0"
    assert report["policy"]["digest"].startswith("sha256:")


def test_check_github_format_reports_denial(tmp_path, policies, capsys):
    path = tmp_path / "prod-shell.yaml"
    path.write_text(SHELL_IN_PROD)
    rc, out, _ = run(capsys, "check", "--format", "github", "--policies", str(policies), str(path))
    assert rc == 1
    assert any(
        line.startswith("::error file=") and "no-shell-in-production" in line
        for line in out.splitlines()
    )


def test_hard_budget_exceeded_exit_1(tmp_path, policies, capsys):
    path = tmp_path / "pricey.yaml"
    path.write_text(
        SHELL_IN_PROD.replace("id: prod-shell", "id: pricey")
        .replace("environment: production", "environment: staging")
        .replace(
            "compensate: {action: noop}", "compensate: {action: noop}\n    estimate: {fixed: '7.5'}"
        )
        + "budget: {money: {hard: '5'}}\n"
    )
    rc, out, _ = run(capsys, "check", "--policies", str(policies), str(path))
    assert rc == 1
    assert "budget.plan.money" in out and "7.5 exceeds hard limit 5" in out


def test_broken_policy_file_exit_2_names_file_and_line(tmp_path, policies, capsys):
    (policies / "safety.yaml").write_text(
        "rules:\n  - id: x\n    when: {environment: production}\n    mesage: typo\n"
    )
    rc, out, _ = run(capsys, "check", "--policies", str(policies), str(ROOT / "plans"))
    assert rc == 2
    assert f"error {policies}/safety.yaml:4:5: unknown field 'mesage'" in out


def test_missing_policy_dir_exit_2(tmp_path, capsys):
    rc, out, _ = run(
        capsys,
        "check",
        "--policies",
        str(tmp_path / "none"),
        str(ROOT / "plans" / "local-hello.yaml"),
    )
    assert rc == 2
    assert "policy directory does not exist" in out


def test_explain_prints_the_trace(capsys):
    rc, out, _ = run(
        capsys,
        "explain",
        "--policies",
        str(ROOT / "policies"),
        "--author",
        "alice",
        str(ROOT / "plans" / "rotate-db-credentials.yaml"),
    )
    assert rc == 0
    assert "verdict: ALLOW" in out
    assert "risk: high (score 93)" in out
    assert "+40   environment" in out
    assert "high-risk-dual-authorization: 2 approvals from teams platform, sre, security" in out
    assert "may not approve: alice: author of the change" in out
    assert "exempt   no-irreversible-production-changes [step record-change]" in out
    assert "cost: 0.1481 USD" in out


def test_explain_denied_plan_says_what_to_change(tmp_path, capsys):
    path = tmp_path / "prod-shell.yaml"
    path.write_text(SHELL_IN_PROD)
    rc, out, _ = run(capsys, "explain", "--policies", str(ROOT / "policies"), str(path))
    assert rc == 1
    assert "verdict: DENY" in out
    assert "why it is denied" in out
    assert "no-shell-in-production at " in out


def test_explain_json_and_step(capsys):
    plan = str(ROOT / "plans" / "local-hello.yaml")
    rc, out, _ = run(
        capsys,
        "explain",
        "--format",
        "json",
        "--policies",
        str(ROOT / "policies"),
        "--step",
        "write-marker",
        plan,
    )
    assert rc == 0
    data = json.loads(out)
    assert data["step"] == "write-marker" and data["verdict"] == "allow"
    assert [r["id"] for r in data["approvals"]["all_of"]] == ["local-single-approval"]


# -- --base REF: policies from the base branch, cost diff ----------------------------------


def _commit(repo: git.Repo, message: str) -> None:
    repo.git.add(A=True)
    repo.index.commit(message, author=git.Actor("Mallory", "m@example.com"))


@pytest.fixture
def repo(tmp_path, monkeypatch) -> git.Repo:
    root = tmp_path / "repo"
    shutil.copytree(ROOT / "policies", root / "policies")
    (root / "plans").mkdir()
    for name in ("local-hello.yaml", "agent-backfill.yaml", "scale-checkout-service.yaml"):
        shutil.copy(ROOT / "plans" / name, root / "plans" / name)
    r = git.Repo.init(root, initial_branch="main")
    _commit(r, "base")
    r.git.checkout("-b", "feature")
    monkeypatch.chdir(root)
    return r


def test_pr_editing_policies_is_judged_by_base_policy(repo, capsys):
    root = Path(repo.working_tree_dir)
    (root / "plans" / "prod-shell.yaml").write_text(SHELL_IN_PROD)
    safety = root / "policies" / "safety.yaml"
    safety.write_text(
        safety.read_text()
        .replace("id: no-shell-in-production", "id: relaxed")
        .replace(
            "when: {environment: production, actions: [shell]}",
            "when: {environment: nowhere, actions: [shell]}",
        )
    )
    _commit(repo, "allow myself shell in production")

    # Without --base the edited (head) policy would allow it ...
    rc, _, _ = run(capsys, "check", "plans/prod-shell.yaml")
    assert rc == 0
    # ... but the pull request is judged by the base branch's policy.
    rc, out, _ = run(capsys, "check", "--base", "main", "--format", "json", "plans/")
    report = json.loads(out)
    assert rc == 1
    assert report["policy"]["origin"] == "policies/ at main"
    denied = next(d for d in report["policy"]["decisions"] if d["path"] == "plans/prod-shell.yaml")
    assert [d["rule"] for d in denied["denials"]] == ["no-shell-in-production"]
    changes = {(c["status"], c["section"], c["name"]) for c in report["policy"]["changes"]}
    assert ("removed", "rules", "no-shell-in-production") in changes
    assert ("added", "rules", "relaxed") in changes
    # the policy edit itself needs the security team, and its author may not approve
    approvals = denied["approvals"]
    assert "policy-changes" in [r["id"] for r in approvals["all_of"]]
    assert "Mallory" in approvals["excluded"]


def test_base_cost_diff_new_changed_removed(repo, capsys):
    root = Path(repo.working_tree_dir)
    (root / "plans" / "scale-checkout-service.yaml").unlink()
    backfill = root / "plans" / "agent-backfill.yaml"
    backfill.write_text(backfill.read_text().replace("output: 200000}}", "output: 100000}}", 1))
    shutil.copy(ROOT / "plans" / "dispatch-release.yaml", root / "plans" / "dispatch-release.yaml")
    rc, out, _ = run(capsys, "check", "--base", "main", "--format", "json", "plans")
    assert rc == 0, out
    diff = {c["path"]: c for c in json.loads(out)["cost"]["diff"]}
    assert diff["plans/agent-backfill.yaml"]["status"] == "changed"
    assert diff["plans/agent-backfill.yaml"]["delta"] == "-0.06"
    assert diff["plans/dispatch-release.yaml"]["status"] == "new"
    assert diff["plans/dispatch-release.yaml"]["delta"] == "+0.154"
    assert diff["plans/scale-checkout-service.yaml"]["status"] == "removed"
    assert diff["plans/local-hello.yaml"]["status"] == "unchanged"
    rc, text, _ = run(capsys, "check", "--base", "main", "plans")
    assert "cost against main" in text


def test_base_ref_without_policies_fails_closed(repo, capsys):
    rc, out, _ = run(capsys, "check", "--base", "main", "--policies", "nothing-here", "plans")
    assert rc == 2
    assert "no policy files in nothing-here/ at git ref 'main'" in out


def test_unknown_base_ref_is_exit_2(repo, capsys):
    rc, _, err = run(capsys, "check", "--base", "no-such-branch", "plans")
    assert rc == 2
    assert "git ref 'no-such-branch' does not exist" in err


def test_pr_breaking_the_policy_files_is_exit_2(repo, capsys):
    root = Path(repo.working_tree_dir)
    (root / "policies" / "safety.yaml").write_text("rules: [\n")
    rc, out, _ = run(capsys, "check", "--base", "main", "plans")
    assert rc == 2
    assert "policies/safety.yaml:2" in out and "invalid YAML" in out
