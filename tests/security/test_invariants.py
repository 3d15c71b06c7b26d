"""Security invariants not already proven elsewhere: one named test each (docs/security.md).

Invariants that other suites already prove are listed in docs/security.md with their test; this
module adds the ones that cross parts: forks, policy/workflow changes next to a plan, reviewers
who pushed commits under the shipped policy, attestations moved between plans, untrusted keys at
run time, the unsafe switch, the constant-time signature check.
"""

from __future__ import annotations

import hmac
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from ghfake import Pull
from srvkit import BASE, HEAD, PLAN, REPO, create_app, make_deps, post, webhook_fixture

from app.approvals.attest import local_attestation_path
from app.approvals.context import ChangedFile, Commit
from app.approvals.gate import evaluate_gate
from app.cli import main
from app.plan.loader import load_plan
from app.policy.context import EvalContext
from app.policy.engine import evaluate
from app.policy.loader import load_policy_dir
from app.server import webhooks
from app.server.engine import PolicyEngineEvaluator
from app.signing.local_store import DEFAULT_ATTESTATION_DIR

ROOT = Path(__file__).resolve().parents[2]
POLICY_FILES = {
    f"policies/{p.name}": p.read_bytes() for p in sorted((ROOT / "policies").glob("*.yaml"))
}


def _approval_fakes():
    """tests/approvals/approval_fakes.py by path (tests/approvals is not on sys.path here)."""
    spec = importlib.util.spec_from_file_location(
        "approval_fakes", ROOT / "tests" / "approvals" / "approval_fakes.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["approval_fakes"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


fakes = _approval_fakes()


# -- pull requests through the webhook server (fake GitHub, real policy engine and gate) -----------


def _pr_world(fake, *, author: str, head_files: dict[str, bytes], fork: str | None = None):
    repo = fake.repo(REPO)
    repo.commit({"README.md": "x", **POLICY_FILES}, branch="master", sha=BASE)
    repo.commit(
        {"README.md": "x", **POLICY_FILES, "plans/hello.yaml": PLAN, **head_files}, sha=HEAD
    )
    repo.pulls[2] = Pull(2, HEAD, BASE, "master", author=author)
    payload = webhook_fixture("pull_request.opened")
    payload["pull_request"]["user"]["login"] = author
    if fork:
        head_repo = payload["pull_request"]["head"]["repo"]
        head_repo["full_name"] = fork
        head_repo["fork"] = True
        head_repo["owner"]["login"] = fork.split("/")[0]
        payload["pull_request"]["head"]["label"] = f"{fork.split('/')[0]}:changes"
    return payload


def _deliver(settings, payload, event="pull_request"):
    deps = make_deps(settings, evaluator=PolicyEngineEvaluator())
    client = TestClient(create_app(settings, deps))
    assert post(client, event, payload).status_code == 202
    assert deps.worker.drain() == 1
    return deps


def _teams_with(team: str, login: str) -> bytes:
    """The shipped teams.yaml with ``login`` added to ``team`` (what a hostile PR would do)."""
    text = POLICY_FILES["policies/teams.yaml"].decode()
    anchor = f"  {team}:\n    members: ["
    assert anchor in text
    return text.replace(anchor, anchor + f"{login}, ").encode()


def _approve(fake, *logins: str) -> dict:
    fake.repo(REPO).pulls[2].reviews = [
        {
            "id": 100 + i,
            "user": {"login": login},
            "state": "APPROVED",
            "commit_id": HEAD,
            "submitted_at": f"2026-11-25T01:0{i}:00Z",
        }
        for i, login in enumerate(logins)
    ]
    review = webhook_fixture("pull_request_review.submitted")
    return review


def _org_answers(fake, monkeypatch, *, members: dict[str, list[str]], admins: set[str]) -> None:
    """Teach the shared fake two more GitHub answers for this module: team members and admin
    permission (its defaults are 404 and "write"), so the gate gets past its lookups."""
    route = fake._route

    def extended(method, path, query, headers, data):
        m = re.fullmatch(r"/orgs/([^/]+)/teams/([^/]+)/members", path)
        if m and method == "GET":
            return 200, {}, [{"login": u} for u in members.get(m.group(2), [])]
        m = re.fullmatch(r"/repos/[^/]+/[^/]+/collaborators/([^/]+)/permission", path)
        if m and method == "GET" and m.group(1) in admins:
            return 200, {}, {"permission": "admin", "user": {"login": m.group(1)}}
        return route(method, path, query, headers, data)

    monkeypatch.setattr(fake, "_route", extended)


def test_fork_pr_judged_by_base_policy_not_its_own(settings, fake):
    """A PR from a fork that adds its author to a team in policies/ is still judged by base."""
    payload = _pr_world(
        fake,
        author="mallory",
        head_files={"policies/teams.yaml": _teams_with("platform", "mallory")},
        fork="mallory/Hello-World",
    )
    _deliver(settings, payload)
    runs = fake.runs_for(HEAD)
    policy = runs["plangate/policy"]
    assert policy["conclusion"] == "failure"
    assert "mallory may not enqueue" in policy["output"]["summary"]
    assert runs["plangate/approval"]["conclusion"] != "success"


def test_fork_pr_author_approval_never_counts(settings, fake):
    """alice (a platform member) proposes from her fork and approves it herself: not counted."""
    payload = _pr_world(fake, author="alice", head_files={}, fork="alice/Hello-World")
    _deliver(settings, payload)
    assert fake.runs_for(HEAD)["plangate/policy"]["conclusion"] == "success"
    review = _approve(fake, "alice")
    review["pull_request"]["user"]["login"] = "alice"
    fake.check_runs.clear()
    _deliver(settings, review, event="pull_request_review")
    approval = fake.runs_for(HEAD)["plangate/approval"]
    assert approval["conclusion"] != "success"
    assert "opened the PR" in approval["output"]["summary"], approval["output"]["summary"]


def test_policy_and_workflow_changes_with_a_plan_need_extra_approvals(settings, fake, monkeypatch):
    """Head adds mallory to security and edits a workflow: base policy decides who may approve.

    Under the head's policy mallory (now "security") would satisfy the policy-change rule; under
    the base policy mallory is nobody, so the approval check stays open with the extra
    requirements named.
    """
    payload = _pr_world(
        fake,
        author="alice",
        head_files={
            "policies/teams.yaml": _teams_with("security", "mallory"),
            ".github/workflows/plangate-execute.yml": b"on: push\njobs: {}\n",
        },
    )
    _org_answers(fake, monkeypatch, members={}, admins={"bob", "mallory", "ivan"})
    _deliver(settings, payload)
    review = _approve(fake, "bob", "mallory")
    review["pull_request"]["user"]["login"] = "alice"
    fake.check_runs.clear()
    _deliver(settings, review, event="pull_request_review")
    approval = fake.runs_for(HEAD)["plangate/approval"]
    summary = approval["output"]["summary"]
    assert approval["conclusion"] != "success", summary
    assert "could not evaluate" not in summary, summary
    rows = {
        line.split("`")[1]: line
        for line in summary.splitlines()
        if line.startswith("| ") and "`" in line
    }
    assert "1 approval from team security" in rows["policy-changes"], "mallory does not count"
    assert "@mallory" not in rows["policy-changes"]
    assert "workflow-changes" in rows, summary
    # and the real security team does satisfy it (the rule is satisfiable, not just broken)
    fake.check_runs.clear()
    _deliver(settings, _approve(fake, "bob", "mallory", "ivan"), event="pull_request_review")
    summary = fake.runs_for(HEAD)["plangate/approval"]["output"]["summary"]
    rows = {
        line.split("`")[1]: line
        for line in summary.splitlines()
        if line.startswith("| ") and "`" in line
    }
    assert "@ivan" in rows["policy-changes"], summary


# -- the approval gate under the shipped policy ----------------------------------------------------


def test_reviewer_who_pushed_commits_never_counts_under_shipped_policy():
    """bob pushed a commit to alice's PR: his approval does not count, alice is the author."""
    policy = load_policy_dir(ROOT / "policies")
    loaded = load_plan(ROOT / "plans" / "local-hello.yaml")
    decision = evaluate(
        loaded.plan,
        policy,
        EvalContext(now=fakes.T0, author="alice", plan_path="plans/local-hello.yaml"),
    )
    assert decision.allowed
    ctx = fakes.FakePullContext(
        author_value="alice",
        changed_files_value=[ChangedFile("plans/local-hello.yaml")],
        file_blobs_value={fakes.HEAD: {"plans/local-hello.yaml": "blob1"}},
        commits_value=[
            Commit(sha=fakes.OLD, author="alice", committer="alice"),
            Commit(sha=fakes.HEAD, author="alice", committer="web-flow", pushed_by="bob"),
        ],
        team_members_value={"acme/platform": frozenset({"alice", "bob"})},
    ).approve("bob")
    result = evaluate_gate(decision.approvals, ctx, now=fakes.T0)
    assert result.status != "satisfied"
    assert "bob" in {i.login for i in result.ignored}
    # the same review from someone who did not touch the PR does count
    clean = fakes.FakePullContext(
        author_value="alice",
        changed_files_value=[ChangedFile("plans/local-hello.yaml")],
        file_blobs_value={fakes.HEAD: {"plans/local-hello.yaml": "blob1"}},
        commits_value=[Commit(sha=fakes.HEAD, author="alice", committer="alice")],
        team_members_value={"acme/platform": frozenset({"alice", "bob"})},
    ).approve("bob")
    assert evaluate_gate(decision.approvals, clean, now=fakes.T0).status == "satisfied"


# -- the executor and local attestations -----------------------------------------------------------

LOCAL = "plans/local-hello.yaml"


@pytest.fixture
def repo(tmp_path, monkeypatch) -> Path:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "plans").mkdir()
    shutil.copy(ROOT / LOCAL, tmp_path / LOCAL)
    shutil.copytree(ROOT / "policies", tmp_path / "policies")
    (tmp_path / ".plangate").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("USER", "carol")
    monkeypatch.delenv("PLANGATE_DATA_DIR", raising=False)
    return tmp_path


def _run(plan: str, *extra: str) -> int:
    return main(["run", plan, "--format", "json", "--audit-repo", "audit.git", *extra])


def test_attestation_copied_to_another_plan_is_refused(repo, capsys):
    """Plan A's signed attestation filed under plan B's digest never authorises plan B."""
    assert main(["keygen"]) == 0
    assert main(["attest", LOCAL, "--approver", "alice"]) == 0
    other = repo / "plans" / "other.yaml"
    other.write_text(
        (repo / LOCAL)
        .read_text()
        .replace("id: local-hello", "id: local-other")
        .replace("hello.txt').write_text('hello')", "hello.txt').write_text('pwned')")
    )
    digest_a = load_plan(repo / LOCAL).digest
    digest_b = load_plan(other).digest
    src = repo / DEFAULT_ATTESTATION_DIR / local_attestation_path(digest_a)
    dst = repo / DEFAULT_ATTESTATION_DIR / local_attestation_path(digest_b)
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dst)
    capsys.readouterr()
    assert _run("plans/other.yaml") == 1
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "refused"
    assert not (repo / ".plangate" / "hello.txt").exists()


def test_attestation_signed_by_untrusted_key_refused_at_run(repo, capsys):
    """A valid signature by a key the executor does not trust authorises nothing."""
    assert main(["keygen"]) == 0
    trusted = repo.parent / f"{repo.name}-trusted.pub"
    shutil.copy(repo / ".plangate" / "keys" / "approval.pem.pub", trusted)
    shutil.rmtree(repo / ".plangate" / "keys")
    assert main(["keygen"]) == 0  # a different key, e.g. on an attacker's machine
    assert main(["attest", LOCAL, "--approver", "alice"]) == 0
    capsys.readouterr()
    assert _run(LOCAL, "--trusted-key", str(trusted)) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "refused"
    assert not (repo / ".plangate" / "hello.txt").exists()


def test_unsafe_switch_is_named_unsafe_and_loud(repo, capsys):
    assert _run(LOCAL, "--unsafe-no-approval") == 0
    err = capsys.readouterr().err
    assert "UNSAFE" in err and "WITHOUT a verified approval" in err


def test_policy_denial_wins_over_a_valid_attestation(repo, capsys):
    """Approved, then the base policy changes to deny: the run re-checks and refuses."""
    assert main(["keygen"]) == 0
    assert main(["attest", LOCAL, "--approver", "alice"]) == 0
    safety = repo / "policies" / "safety.yaml"
    safety.write_text(
        safety.read_text()
        + "\n  - id: freeze-local\n    when: {environment: local}\n    message: change freeze\n"
    )
    capsys.readouterr()
    assert _run(LOCAL) == 1
    assert "freeze-local" in capsys.readouterr().err
    assert not (repo / ".plangate" / "hello.txt").exists()


# -- webhook signature ---------------------------------------------------------------------------


def test_webhook_signature_compared_in_constant_time(monkeypatch):
    """verify_signature decides through hmac.compare_digest, never ``==`` on secrets."""
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(webhooks.hmac, "compare_digest", spy)
    body = b'{"zen": "x"}'
    assert webhooks.verify_signature(b"k", body, webhooks.sign(b"k", body))
    assert not webhooks.verify_signature(b"k", body, webhooks.sign(b"other", body))
    assert len(calls) == 2
