"""`plangate check` output formats: text, JSON (stable, documented schema) and GitHub commands.

``check`` also applies the policies in ``policies/`` (exit 1 on a denial); these tests are about
validation and its output, so for valid plans they accept either verdict and assert on the
validation part of the report. The JSON schema is additive: the keys below must exist, more
may be added (the policy engine adds ``policy`` and ``cost``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.cli import main

ROOT = Path(__file__).resolve().parent.parent
GOOD = """\
apiVersion: plangate.dev/v1
kind: Plan
id: good
title: Good plan
team: platform
environment: staging
steps:
  - {id: a, action: noop}
"""
BAD = GOOD.replace("id: good", "id: bad").replace("action: noop}", "action: noop, needs: [zz]}")

REPORT_KEYS = {"version", "ok", "exit_code", "summary", "plans", "errors", "policy", "cost"}
PLAN_KEYS = {"path", "id", "title", "team", "environment", "steps", "digest"}
ERROR_KEYS = {"path", "line", "col", "step", "field", "code", "message", "hint"}


@pytest.fixture
def files(tmp_path):
    (tmp_path / "good.yaml").write_text(GOOD)
    (tmp_path / "bad.yaml").write_text(BAD)
    return tmp_path


def run(capsys, *argv: str) -> tuple[int, str]:
    rc = main(list(argv))
    return rc, capsys.readouterr().out


def test_json_report_schema_for_a_valid_plan(files, capsys):
    rc, out = run(capsys, "check", "--format", "json", str(files / "good.yaml"))
    assert rc in (0, 1)  # valid; the policy verdict is not this test's business
    report = json.loads(out)
    assert set(report) >= REPORT_KEYS
    assert report["version"] == 1
    assert report["exit_code"] == rc and report["ok"] is (rc == 0)
    assert report["summary"] == {"files": 1, "plans": 1, "errors": 0}
    (plan,) = report["plans"]
    assert set(plan) >= PLAN_KEYS
    assert plan["id"] == "good" and plan["steps"] == 1
    assert plan["digest"].startswith("sha256:") and len(plan["digest"]) == 71
    assert report["errors"] == []


def test_json_report_schema_for_errors(files, capsys):
    rc, out = run(capsys, "check", "--format", "json", str(files))
    assert rc == 2
    report = json.loads(out)
    assert set(report) >= REPORT_KEYS
    assert report["ok"] is False and report["exit_code"] == 2
    assert report["summary"] == {"files": 2, "plans": 1, "errors": 1}
    (error,) = report["errors"]
    assert set(error) == ERROR_KEYS
    assert error == {
        "path": str(files / "bad.yaml"),
        "line": 8,
        "col": 35,
        "step": "a",
        "field": "needs[0]",
        "code": "step.unknown_need",
        "message": "step 'a' needs unknown step 'zz'",
        "hint": "list an existing step id",
    }


def test_digest_in_json_is_stable_across_formats(files, capsys):
    _, out = run(capsys, "check", "--format", "json", str(files / "good.yaml"))
    digest = json.loads(out)["plans"][0]["digest"]
    _, text = run(capsys, "check", str(files / "good.yaml"))
    assert digest in text


def test_github_format_prints_workflow_commands(files, capsys):
    rc, out = run(capsys, "check", "--format", "github", str(files))
    assert rc == 2
    lines = out.splitlines()
    bad = str(files / "bad.yaml").replace(":", "%3A").replace(",", "%2C")
    assert (
        f"::error file={bad},line=8,col=35,title=plangate%3A step.unknown_need::"
        "step 'a' needs unknown step 'zz' (list an existing step id)"
    ) in lines
    assert any(line.startswith("::notice file=") and "plan good sha256:" in line for line in lines)


def test_github_format_escapes_newlines_and_percent(tmp_path, capsys):
    path = tmp_path / "p,100%.yaml"
    path.write_text("a: 1\na: 2\n")
    rc, out = run(capsys, "check", "--format", "github", str(path))
    assert rc == 2
    (line,) = out.splitlines()
    assert "p%2C100%25.yaml" in line
    assert "\r" not in line


def test_text_format(files, capsys):
    rc, out = run(capsys, "check", str(files))
    assert rc == 2
    assert f"{files / 'good.yaml'}  good  (1 steps, staging, team platform)  sha256:" in out
    assert f"error {files / 'bad.yaml'}:8:35: step 'a' needs unknown step 'zz'" in out
    assert "1 error(s); 1 valid plan" in out


def test_example_plans_pass_in_every_format(capsys):
    for fmt in ("text", "json", "github"):
        rc, _ = run(capsys, "check", "--format", fmt, str(ROOT / "plans"))
        assert rc == 0


def test_check_without_paths_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["check"])
    assert exc.value.code == 2
    assert "PATH" in capsys.readouterr().err


def test_directory_search_skips_hidden_folders(tmp_path, capsys, monkeypatch):
    """`plangate check .` must not treat workflow files under .github/ as plans."""
    import shutil
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    (tmp_path / "plans").mkdir()
    shutil.copy(root / "plans" / "local-hello.yaml", tmp_path / "plans" / "local-hello.yaml")
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    (tmp_path / ".github" / "workflows" / "ci.yml").write_text("on: push\njobs: {}\n")
    monkeypatch.chdir(tmp_path)
    main(["check", ".", "--policies", str(root / "policies"), "--format", "json"])
    report = json.loads(capsys.readouterr().out)
    assert [p["path"] for p in report["plans"]] == ["plans/local-hello.yaml"]
    assert not [e for e in report["errors"] if ".github" in e["path"]]
