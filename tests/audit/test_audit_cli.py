"""``plangate audit``: list, show, verify, export, commit, push through the real CLI."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import git
import pytest
from audit_support import draft, rewrite_history

from app.audit.events import verify_records
from app.audit.export import CSV_COLUMNS
from app.audit.git_store import DEFAULT_REF, GitAuditStore
from app.cli import main


@pytest.fixture
def repo(git_repo):
    store = GitAuditStore(git_repo, batch_size=1000)
    store.append([draft(i) for i in range(40)])
    store.commit()
    store.append(
        [
            draft(40, type="run.started", correlation_id="run-x", plan_id="db-migrate"),
            draft(
                41,
                type="step.failed",
                correlation_id="run-x",
                plan_id="db-migrate",
                step="migrate",
                payload={"error": "timeout"},
            ),
            draft(
                42,
                type="run.finished",
                correlation_id="run-x",
                plan_id="db-migrate",
                payload={"status": "failed"},
            ),
        ]
    )
    store.commit()
    store.close()
    return str(git_repo)


def test_list_filters_json(repo, capsys):
    assert main(["audit", "list", "--repo", repo, "--plan", "plan-3", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["count"] == len([i for i in range(40) if i % 7 == 3])
    assert {e["plan_id"] for e in out["events"]} == {"plan-3"}
    seqs = [e["seq"] for e in out["events"]]
    assert seqs == sorted(seqs)


def test_list_combines_filters_and_limit(repo, capsys):
    argv = [
        "audit",
        "list",
        "--repo",
        repo,
        "--event",
        "run.started",
        "--event",
        "run.finished",
        "--team",
        "payments",
        "--limit",
        "3",
        "--format",
        "json",
    ]
    assert main(argv) == 0
    events = json.loads(capsys.readouterr().out)["events"]
    assert len(events) == 3
    assert all(e["type"] in ("run.started", "run.finished") for e in events)
    assert events[-1]["seq"] == 43  # the most recent ones, shown oldest first


def test_list_time_range(repo, capsys):
    argv = [
        "audit",
        "list",
        "--repo",
        repo,
        "--since",
        "2026-11-25T02:00:10Z",
        "--until",
        "2026-11-25T02:00:12",
        "--format",
        "json",
    ]
    assert main(argv) == 0
    assert [e["seq"] for e in json.loads(capsys.readouterr().out)["events"]] == [11, 12]


def test_list_text_table(repo, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["audit", "list", "--repo", repo, "--actor", "user1", "--limit", "0"]) == 0
    out = capsys.readouterr().out
    assert "user:user1" in out and "seq" in out


def test_show_run_timeline(repo, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["audit", "show", "run-x", "--repo", repo]) == 0
    out = capsys.readouterr().out
    assert "run run-x" in out
    assert "failed" in out and "migrate" in out
    assert main(["audit", "show", "run-x", "--repo", repo, "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["run"]["status"] == "failed"
    assert data["run"]["failed_steps"] == ["migrate"]
    assert [e["type"] for e in data["events"]] == ["run.started", "step.failed", "run.finished"]


def test_show_unknown_run_is_exit_2(repo, capsys):
    assert main(["audit", "show", "nope", "--repo", repo]) == 2
    assert "no audit events for run 'nope'" in capsys.readouterr().err


def test_verify_ok_then_tampered_exit_1_names_event(repo, capsys):
    assert main(["audit", "verify", "--repo", repo]) == 0
    assert "ok: 43 events in 2 commits" in capsys.readouterr().out

    def edit(commits):
        path = next(iter(commits[0]["files"]))
        commits[0]["files"][path] = commits[0]["files"][path].replace(b'"i":7,', b'"i":700,', 1)
        return commits

    rewrite_history(git.Repo(repo), DEFAULT_REF, edit)
    assert main(["audit", "verify", "--repo", repo]) == 1
    err = capsys.readouterr().err
    assert "BROKEN" in err
    # the anchor from the first verify catches the rewrite first
    assert "history was rewritten" in err
    (GitAuditStore(repo).state_dir / "verified.json").unlink()
    assert main(["audit", "verify", "--repo", repo, "--format", "json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False
    assert data["first_break"]["seq"] == 8
    assert "edited" in data["first_break"]["reason"]


def test_export_jsonl_reverifies_elsewhere(repo, capsys):
    assert main(["audit", "export", "--repo", repo, "--format", "jsonl"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 43
    result = verify_records((f"line {i}", line) for i, line in enumerate(lines, 1))
    assert result.ok and result.count == 43


def test_export_csv(repo, capsys, tmp_path):
    out = tmp_path / "events.csv"
    argv = ["audit", "export", "--repo", repo, "--format", "csv", "--run", "run-x", "-o", str(out)]
    assert main(argv) == 0
    rows = list(csv.reader(io.StringIO(out.read_text())))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [r[2] for r in rows[1:]] == ["run.started", "step.failed", "run.finished"]
    assert json.loads(rows[2][12]) == {"error": "timeout"}


def test_commit_and_push_commands(tmp_path, capsys):
    bare = tmp_path / "remote.git"
    git.Repo.init(bare, bare=True)
    local = tmp_path / "local"
    git.Repo.init(local).create_remote("origin", str(bare))
    store = GitAuditStore(local, batch_size=1000)
    store.append([draft(0)])
    store.close()
    assert main(["audit", "commit", "--repo", str(local), "-m", "phase done"]) == 0
    assert "committed" in capsys.readouterr().out
    assert main(["audit", "commit", "--repo", str(local)]) == 0
    assert "nothing to commit" in capsys.readouterr().out
    assert main(["audit", "push", "--repo", str(local)]) == 0
    assert GitAuditStore(bare).head().seq == 1


def test_not_a_repository_exit_3(tmp_path, capsys):
    assert main(["audit", "list", "--repo", str(tmp_path)]) == 3
    assert "not a git repository" in capsys.readouterr().err


def test_bad_time_is_a_usage_error(repo):
    with pytest.raises(SystemExit) as exc:
        main(["audit", "list", "--repo", repo, "--since", "yesterday"])
    assert exc.value.code == 2


def test_repo_found_from_a_subdirectory(repo, capsys):
    sub = Path(repo) / "sub"
    sub.mkdir()
    assert main(["audit", "list", "--repo", str(sub), "--run", "run-x", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 3


def test_verify_expect_commit(repo, capsys):
    tip = GitAuditStore(repo).tip()
    assert main(["audit", "verify", "--repo", repo, "--expect-commit", tip]) == 0
    capsys.readouterr()
    assert main(["audit", "verify", "--repo", repo, "--expect-commit", "0" * 40]) == 1
    assert "no longer in the history" in capsys.readouterr().err
