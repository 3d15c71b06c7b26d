"""``PLANGATE_DATABASE_URL``: read in settings only, picks the PostgreSQL stores everywhere."""

from __future__ import annotations

import json

import pytest
from pydantic import SecretStr
from srvkit import make_deps, webhook_fixture

from app.cli import main
from app.errors import InputError
from app.server.inbox import Inbox, open_inbox
from app.server.inbox_pg import PostgresInbox
from app.server.webhooks import Event
from app.settings import Settings


def test_database_url_is_read_and_kept_secret():
    url = "postgresql://plangate:hunter2@db.internal:5432/plangate"
    settings = Settings.from_env({"PLANGATE_DATABASE_URL": url})
    assert settings.database_url is not None
    assert settings.database_url.get_secret_value() == url
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings)


def test_unset_database_url_means_sqlite_in_the_data_dir(tmp_path):
    settings = Settings.from_env({"PLANGATE_DATA_DIR": str(tmp_path)})
    assert settings.database_url is None
    inbox = open_inbox(settings)
    assert isinstance(inbox, Inbox) and inbox.location == str(tmp_path / "inbox.sqlite3")
    inbox.close()


@pytest.mark.parametrize("bad", ["mysql://u@h/db", "sqlite:///x.db", "db.internal:5432"])
def test_non_postgres_database_url_is_a_startup_error_naming_the_variable(bad):
    with pytest.raises(InputError, match="PLANGATE_DATABASE_URL is not a postgresql:// URL"):
        Settings.from_env({"PLANGATE_DATABASE_URL": bad})


def test_server_wiring_uses_postgres_when_the_url_is_set(settings, pg_url, tmp_path):
    deps = make_deps(settings.model_copy(update={"database_url": SecretStr(pg_url)}))
    assert isinstance(deps.inbox, PostgresInbox)
    assert not (settings.data_dir / "inbox.sqlite3").exists()  # nothing written locally
    deps.inbox.close()


def test_deliveries_cli_reads_the_shared_inbox(monkeypatch, tmp_path, pg_url, capsys):
    monkeypatch.setenv("PLANGATE_DATA_DIR", str(tmp_path / "nothing-here"))
    monkeypatch.setenv("PLANGATE_DATABASE_URL", pg_url)
    replica = PostgresInbox(pg_url, heartbeat=False)
    payload = webhook_fixture("pull_request.opened")
    replica.add(Event("pull_request", "on-replica-1", payload), json.dumps(payload).encode(), now=1)
    assert main(["deliveries", "list", "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["id"] == "on-replica-1" and row["status"] == "queued"
    replica.close()
