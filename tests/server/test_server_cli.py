"""``plangate deliveries`` and ``plangate propose`` through ``app.cli.main``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import responses
from ghfake import FakeGitHub, webhook_fixture
from srvkit import PLAN, ROOT

from app.cli import main
from app.cli.deliveries import parse_since
from app.server.inbox import Inbox
from app.server.webhooks import Event

GHES = "https://ghes.example.com/api/v3"


@pytest.fixture
def env(monkeypatch, tmp_path, private_key):
    for name in ("GITHUB_TOKEN", "GITHUB_PRIVATE_KEY_PATH", "GITHUB_APP_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PLANGATE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("GITHUB_API_URL", GHES)
    monkeypatch.setenv("GITHUB_APP_ID", "42")
    monkeypatch.setenv("GITHUB_PRIVATE_KEY", private_key)
    return tmp_path / "data"


@pytest.fixture
def gh():
    fake = FakeGitHub(GHES)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake.install(rsps)
        yield fake


def _store(data_dir, delivery_id: str) -> Inbox:
    inbox = Inbox.in_dir(data_dir)
    payload = webhook_fixture("pull_request.opened")
    body = json.dumps(payload).encode()
    inbox.add(Event("pull_request", delivery_id, payload), body, now=1_700_000_000)
    return inbox


def test_deliveries_list_json(env, capsys):
    _store(env, "abc")
    assert main(["deliveries", "list", "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["id"] == "abc" and row["status"] == "queued"
    assert row["key"] == "Codertocat/Hello-World#2"


def test_deliveries_list_table(env, capsys):
    _store(env, "abc")
    assert main(["deliveries", "list"]) == 0
    assert "abc" in capsys.readouterr().out


def test_deliveries_retry_dead_letter(env, capsys):
    inbox = _store(env, "abc")
    inbox.claim(now=2e9)
    inbox.fail("abc", "boom", retry_at=None, now=2e9)
    assert main(["deliveries", "retry", "abc"]) == 0
    assert inbox.get("abc").status == "queued"


def test_deliveries_retry_unknown_id_exit_2(env, capsys):
    _store(env, "abc")
    assert main(["deliveries", "retry", "nope"]) == 2
    assert "no delivery 'nope'" in capsys.readouterr().err


def test_deliveries_without_inbox_exit_2(env, capsys):
    assert main(["deliveries", "list"]) == 2
    assert "PLANGATE_DATA_DIR" in capsys.readouterr().err


def test_recover_redelivers_failed_deliveries_only(env, gh, capsys):
    example = json.loads(
        (ROOT / "tests/fixtures/github/webhooks/app-hook-deliveries.example.json").read_text()
    )
    template = example[0]
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    earlier = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def item(i: int, guid: str, code: int, when: str = now) -> dict:
        status = "OK" if code < 300 else "Invalid HTTP Response: 503"
        return {
            **template,
            "id": i,
            "guid": guid,
            "status_code": code,
            "status": status,
            "delivered_at": when,
        }

    _store(env, "in-inbox")
    gh.deliveries = [
        item(1, "failed-then-ok", 503),
        item(2, "failed-then-ok", 202),
        item(3, "failed", 503, earlier),
        item(4, "failed", 502),
        item(5, "in-inbox", 503),
        item(6, "old-failure", 503, "2019-06-03T00:57:16Z"),
    ]
    assert main(["deliveries", "recover", "--since", "1h"]) == 0
    out = capsys.readouterr().out
    assert gh.redelivered == [4]  # the latest attempt of the one failed delivery we lack
    assert "failed" in out and "already in the inbox" in out


def test_recover_dry_run_sends_nothing(env, gh):
    gh.deliveries = [
        {
            "id": 3,
            "guid": "g",
            "status_code": 500,
            "status": "x",
            "delivered_at": datetime.now(UTC).isoformat(),
        }
    ]
    assert main(["deliveries", "recover", "--since", "2d", "--dry-run"]) == 0
    assert gh.redelivered == []


def test_parse_since():
    now = datetime(2026, 11, 25, 12, tzinfo=UTC)
    assert parse_since("90m", now=now) == datetime(2026, 11, 25, 10, 30, tzinfo=UTC)
    assert parse_since("2026-11-24T10:00:00Z", now=now) == datetime(2026, 11, 24, 10, tzinfo=UTC)
    from app.errors import InputError

    with pytest.raises(InputError, match="neither an ISO time"):
        parse_since("yesterday", now=now)


def test_propose_opens_pull_request_with_token(env, gh, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_test")
    repo = gh.repo("octo/ops")
    repo.commit({"README.md": "x"}, branch="main")
    plan = tmp_path / "hello.yaml"
    plan.write_bytes(PLAN)
    assert main(["propose", str(plan), "--repo", "octo/ops"]) == 0
    (pr,) = gh.created_pulls
    assert pr["base"] == "main" and pr["head"].startswith("plangate/local-hello-")
    head = repo.branches[pr["head"]]
    assert repo.commits[head]["plans/hello.yaml"] == PLAN
    assert "sha256:" in pr["body"]
    assert gh.schema_errors == []
    assert len(gh.calls) == 5
    assert "opened pull request #1" in capsys.readouterr().out


def test_propose_as_app_finds_installation(env, gh, tmp_path):
    repo = gh.repo("octo/ops")
    repo.commit({"README.md": "x"}, branch="main")
    original = gh._route

    def route(method, path, query, headers, data):
        if path == "/repos/octo/ops/installation":
            return 200, {}, {"id": 1}
        return original(method, path, query, headers, data)

    gh._route = route
    plan = tmp_path / "hello.yaml"
    plan.write_bytes(PLAN)
    assert main(["propose", str(plan), "--repo", "octo/ops", "--base", "main"]) == 0
    assert gh.token_count == 1 and len(gh.created_pulls) == 1


def test_propose_invalid_plan_exit_2_nothing_sent(env, gh, tmp_path, monkeypatch):
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_test")
    plan = tmp_path / "bad.yaml"
    plan.write_bytes(PLAN.replace(b"action: noop", b"action: nope"))
    assert main(["propose", str(plan), "--repo", "octo/ops"]) == 2
    assert gh.calls == []


def test_propose_same_plan_twice_is_clear_error(env, gh, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_test")
    gh.repo("octo/ops").commit({"README.md": "x"}, branch="main")
    plan = tmp_path / "hello.yaml"
    plan.write_bytes(PLAN)
    assert main(["propose", str(plan), "--repo", "octo/ops"]) == 0
    assert main(["propose", str(plan), "--repo", "octo/ops"]) == 3
    assert "already proposed" in capsys.readouterr().err


def test_serve_missing_secret_is_startup_error_naming_it(env, monkeypatch, capsys):
    monkeypatch.delenv("GITHUB_WEBHOOK_SECRET", raising=False)
    assert main(["serve", "--port", "0"]) == 2
    assert "GITHUB_WEBHOOK_SECRET" in capsys.readouterr().err


def test_serve_missing_app_id_is_startup_error_naming_it(env, monkeypatch, capsys):
    monkeypatch.setenv("GITHUB_WEBHOOK_SECRET", "s")
    monkeypatch.delenv("GITHUB_APP_ID")
    assert main(["serve", "--port", "0"]) == 2
    assert "GITHUB_APP_ID" in capsys.readouterr().err


def test_serve_malformed_app_id_named(env, monkeypatch, capsys):
    monkeypatch.setenv("GITHUB_WEBHOOK_SECRET", "s")
    monkeypatch.setenv("GITHUB_APP_ID", "twelve")
    assert main(["serve", "--port", "0"]) == 2
    assert "GITHUB_APP_ID" in capsys.readouterr().err


def test_serve_config_error_leaves_no_data_dir(env, monkeypatch):
    monkeypatch.delenv("GITHUB_WEBHOOK_SECRET", raising=False)
    assert main(["serve"]) == 2
    assert not env.exists()
