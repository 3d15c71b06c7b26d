"""Scheduled recovery of missed webhooks (``plangate serve --recover-every``).

At start-up the window is the time since the last recorded recovery (what a server that was down
missed), then every interval; a failed run is not recorded, so the next one covers its window.
The end-to-end test runs a real ``plangate serve`` against the fake GitHub's deliveries API.
"""

from __future__ import annotations

import json
import os
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from ghfake import FakeGitHub
from srvkit import SECRET
from test_server_e2e import _free_port, _start, _wait

from app.server.recovery import MAX_WINDOW, OVERLAP, RecoveryReport, RecoverySchedule

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 25, 6, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> datetime:
        return self.t


def _schedule(tmp_path, calls, clock, *, fail=False, every=timedelta(hours=1)):
    def recover(since: datetime) -> RecoveryReport:
        calls.append(since)
        if fail:
            raise RuntimeError("GitHub down")
        return RecoveryReport(scanned=3, redelivered=["g1"])

    return RecoverySchedule(recover, state=tmp_path / "recovery.json", every=every, now=clock)


def test_first_run_covers_one_interval_then_since_the_last_run(tmp_path):
    calls, clock = [], Clock()
    schedule = _schedule(tmp_path, calls, clock)
    assert schedule.run_once().redelivered == ["g1"]
    assert calls == [T0 - timedelta(hours=1)]
    record = json.loads((tmp_path / "recovery.json").read_text())
    assert record["last_started_at"] == T0.isoformat() and record["redelivered"] == ["g1"]
    clock.t = T0 + timedelta(hours=5)  # e.g. the server was down for hours
    schedule.run_once()
    assert calls[-1] == T0 - OVERLAP


def test_window_survives_a_restart(tmp_path):
    """A new process reads the record the previous one left in the data dir."""
    calls, clock = [], Clock()
    _schedule(tmp_path, calls, clock).run_once()
    clock.t = T0 + timedelta(hours=2)
    _schedule(tmp_path, calls, clock).run_once()
    assert calls[-1] == T0 - OVERLAP


def test_window_never_longer_than_github_keeps_deliveries(tmp_path):
    calls, clock = [], Clock()
    _schedule(tmp_path, calls, clock).run_once()
    clock.t = T0 + timedelta(days=30)
    _schedule(tmp_path, calls, clock).run_once()
    assert calls[-1] == clock.t - MAX_WINDOW


def test_failed_run_not_recorded_next_run_covers_its_window(tmp_path):
    calls, clock = [], Clock()
    _schedule(tmp_path, calls, clock).run_once()
    clock.t = T0 + timedelta(hours=1)
    failing = _schedule(tmp_path, calls, clock, fail=True)
    assert failing.run_once() is None
    assert "GitHub down" in failing.last_error
    clock.t = T0 + timedelta(hours=2)
    _schedule(tmp_path, calls, clock).run_once()
    assert calls[-1] == T0 - OVERLAP  # still from the last *successful* run


def test_unreadable_record_falls_back_to_one_interval(tmp_path):
    (tmp_path / "recovery.json").write_text("{not json")
    calls, clock = [], Clock()
    _schedule(tmp_path, calls, clock).run_once()
    assert calls == [T0 - timedelta(hours=1)]


def test_thread_runs_at_start_up_and_stops(tmp_path):
    calls, clock = [], Clock()
    schedule = _schedule(tmp_path, calls, clock)
    schedule.start()
    assert _wait(lambda: len(calls) == 1, seconds=5)
    schedule.stop()
    assert schedule._thread is not None and not schedule._thread.is_alive()
    assert len(calls) == 1  # the next run is an hour away


def test_interval_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="positive"):
        _schedule(tmp_path, [], Clock(), every=timedelta(0))


@pytest.mark.parametrize("bad", ["0h", "1x", "10s", "2026-01-01"])
def test_serve_rejects_a_bad_interval(bad, tmp_path, private_key, monkeypatch, capsys):
    from app.cli import main

    monkeypatch.setenv("GITHUB_APP_ID", "42")
    monkeypatch.setenv("GITHUB_PRIVATE_KEY", private_key)
    monkeypatch.setenv("GITHUB_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("PLANGATE_DATA_DIR", str(tmp_path))
    assert main(["serve", "--recover-every", bad]) == 2
    assert "--recover-every" in capsys.readouterr().err


def test_serve_recovers_missed_deliveries_at_start_up(tmp_path, private_key):
    fake = FakeGitHub("http://127.0.0.1/api/v3")
    example = json.loads(
        (ROOT / "tests/fixtures/github/webhooks/app-hook-deliveries.example.json").read_text()
    )
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    fake.deliveries = [
        {**example[0], "id": 7, "guid": "missed", "status_code": 503, "delivered_at": now},
        {**example[0], "id": 8, "guid": "fine", "status_code": 202, "delivered_at": now},
    ]
    server, api = fake.serve()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "PLANGATE_"))},
        "GITHUB_APP_ID": "42",
        "GITHUB_PRIVATE_KEY": private_key,
        "GITHUB_WEBHOOK_SECRET": SECRET,
        "GITHUB_API_URL": api,
        "PLANGATE_DATA_DIR": str(tmp_path / "data"),
    }
    proc = _start(env, _free_port(), "--recover-every", "1h")
    try:
        assert _wait(lambda: fake.redelivered == [7], seconds=20)
        assert _wait(lambda: (tmp_path / "data" / "recovery.json").exists(), seconds=5)
        record = json.loads((tmp_path / "data" / "recovery.json").read_text())
        assert record["redelivered"] == ["missed"]
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(10)
        server.shutdown()
    assert fake.schema_errors == []
