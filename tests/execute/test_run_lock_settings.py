"""``plangate run`` takes its lock lease and clock-skew allowance from the same settings as
``plangate execute`` (``PLANGATE_LOCK_LEASE_SECONDS`` / ``PLANGATE_LOCK_SKEW_SECONDS``, same
validation), with local defaults: a 60 s lease (a local renewal is one SQL update; a killed run
frees its resources within a minute) and no skew allowance on a SQLite file (one host, one
clock), the settings' 30 s on a store shared by hosts."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
from pathlib import Path

import pytest

from app.cli import main
from app.execute.locks import LockManager
from app.execute.state import StateStore
from app.execute.wiring import LOCAL_LOCK_LEASE_SECONDS, local_locks
from app.settings import Settings

PLAN = """apiVersion: plangate.dev/v1
kind: Plan
id: lease-probe
title: records the lease of its own lock
team: platform
environment: local
resources: [local/lease-probe]
steps:
  - id: probe
    action: shell
    with: {{run: [{python}, -c, {script}]}}
    timeout: 60s
    retry: {{max_attempts: 1}}
    compensate: {{none: test step writes a file only}}
"""


def _probe_plan(tmp: Path) -> Path:
    script = (
        "import sqlite3; c = sqlite3.connect({db!r}); "
        "row = c.execute('SELECT expires_at - acquired_at FROM locks').fetchone(); "
        "open({out!r}, 'w').write(repr(row[0]))"
    ).format(db=str(tmp / "data" / "state.db"), out=str(tmp / "lease"))
    path = tmp / "plan.yaml"
    path.write_text(PLAN.format(python=json.dumps(sys.executable), script=json.dumps(script)))
    return path


def _run(tmp: Path) -> int:
    return main(
        [
            "run",
            str(_probe_plan(tmp)),
            "--unsafe-no-approval",
            "--data-dir",
            str(tmp / "data"),
            "--audit-repo",
            str(tmp / "audit.git"),
        ]
    )


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for var in (
        "PLANGATE_LOCK_LEASE_SECONDS",
        "PLANGATE_LOCK_SKEW_SECONDS",
        "PLANGATE_DATABASE_URL",
        "PLANGATE_DATA_DIR",
    ):
        monkeypatch.delenv(var, raising=False)


def test_plangate_run_uses_the_configured_lease(tmp_path, monkeypatch):
    monkeypatch.setenv("PLANGATE_LOCK_LEASE_SECONDS", "600")
    assert _run(tmp_path) == 0
    assert float((tmp_path / "lease").read_text()) == pytest.approx(600.0)


def test_plangate_run_default_lease_is_the_local_one(tmp_path):
    assert _run(tmp_path) == 0
    assert float((tmp_path / "lease").read_text()) == pytest.approx(LOCAL_LOCK_LEASE_SECONDS)


@pytest.mark.parametrize(
    ("var", "value"),
    [("PLANGATE_LOCK_LEASE_SECONDS", "5"), ("PLANGATE_LOCK_SKEW_SECONDS", "soon")],
)
def test_bad_value_is_exit_two_naming_the_variable_before_anything_runs(
    tmp_path, monkeypatch, capsys, var, value
):
    monkeypatch.setenv(var, value)
    assert _run(tmp_path) == 2
    assert var in capsys.readouterr().err
    assert not (tmp_path / "lease").exists()


def _store(tmp: Path) -> StateStore:
    return StateStore.open(tmp)


def test_local_locks_defaults_and_settings(tmp_path):
    store = _store(tmp_path)
    try:
        unset = local_locks(store, Settings.from_env({}), shared=False)
        assert (unset.lease, unset.skew) == (LOCAL_LOCK_LEASE_SECONDS, 0.0)
        shared = local_locks(store, Settings.from_env({}), shared=True)
        assert (shared.lease, shared.skew) == (LOCAL_LOCK_LEASE_SECONDS, 30.0)
        env = {"PLANGATE_LOCK_LEASE_SECONDS": "900", "PLANGATE_LOCK_SKEW_SECONDS": "45"}
        configured = local_locks(store, Settings.from_env(env), shared=False)
        assert (configured.lease, configured.skew) == (900.0, 45.0)
    finally:
        store.close()


def test_an_expired_lock_is_taken_over_only_after_the_skew(tmp_path):
    store = _store(tmp_path)
    clock = [1000.0]

    async def sleep(_s: float) -> None:  # never used: try_acquire does not wait
        raise AssertionError

    try:
        locks = store.lock_manager(now=lambda: clock[0], sleep=sleep, lease=60.0, skew=30.0)
        assert isinstance(locks, LockManager)
        assert locks.try_acquire(["db"], "run-a", "plan-a") == []
        clock[0] += 60.0 + 29.0  # expired 29 s ago: within the skew, still run-a's
        (held,) = locks.try_acquire(["db"], "run-b", "plan-b")
        assert held.holder == "run-a"
        clock[0] += 2.0  # expired 31 s ago: beyond the skew
        assert locks.try_acquire(["db"], "run-b", "plan-b") == []
    finally:
        store.close()


def test_negative_skew_is_refused(tmp_path):
    conn = sqlite3.connect(":memory:")
    with pytest.raises(ValueError, match="skew not negative"):
        LockManager(conn, now=lambda: 0.0, sleep=asyncio.sleep, lease=60.0, skew=-1.0)
