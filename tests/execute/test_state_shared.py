"""Run state shared by several hosts through one PostgreSQL database (``PLANGATE_DATABASE_URL``).

Each ``PostgresStateStore`` below stands for a host (own connections); the behaviours every
backend keeps are tested on both in test_state_locks.py, test_resume_saga.py and test_cache.py.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from app.errors import InputError
from app.execute.state import open_state_store, state_store_for
from app.execute.state_pg import PostgresStateStore
from app.settings import Settings
from tests.execute.fakes import FakeClock


def test_locks_exclude_runs_on_other_hosts(pg_url):
    clock = FakeClock()
    host_a, host_b = PostgresStateStore(pg_url), PostgresStateStore(pg_url)
    a = host_a.lock_manager(now=clock, sleep=clock.sleep, lease=60)
    b = host_b.lock_manager(now=clock, sleep=clock.sleep, lease=60)
    assert a.try_acquire(["db/orders", "cache/x"], "run-a", "plan-a") == []
    conflicts = b.try_acquire(["db/orders"], "run-b", "plan-b")
    assert [(c.resource, c.holder, c.plan_id) for c in conflicts] == [
        ("db/orders", "run-a", "plan-a")
    ]
    a.release("run-a")
    assert b.try_acquire(["db/orders"], "run-b", "plan-b") == []
    assert [h.holder for h in a.holders()] == ["run-b"]
    host_a.close()
    host_b.close()


def test_concurrent_acquirers_on_many_hosts_one_winner_all_or_nothing(pg_url):
    """Eight hosts race for overlapping resource sets at once: exactly one set of holders wins
    each resource, and no host ever holds part of its set."""
    clock = FakeClock()
    hosts = [PostgresStateStore(pg_url) for _ in range(8)]
    managers = [h.lock_manager(now=clock, sleep=clock.sleep) for h in hosts]
    wanted = {i: sorted({f"r{i % 3}", f"r{(i + 1) % 3}"}) for i in range(8)}
    won: dict[int, bool] = {}
    barrier = threading.Barrier(8)

    def race(i: int) -> None:
        barrier.wait()
        won[i] = managers[i].try_acquire(wanted[i], f"run-{i}", f"plan-{i}") == []

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    held = {h.resource: h.holder for h in managers[0].holders()}
    winners = [i for i, ok in won.items() if ok]
    # any two sets overlap (3 resources, 2 each), so exactly one run can win
    assert len(winners) == 1
    assert held == {r: f"run-{winners[0]}" for r in wanted[winners[0]]}
    for h in hosts:
        h.close()


def test_a_dead_hosts_lock_expires_and_another_host_takes_it(pg_url):
    clock = FakeClock()
    dead = PostgresStateStore(pg_url).lock_manager(now=clock, sleep=clock.sleep, lease=60)
    live_store = PostgresStateStore(pg_url)
    live = live_store.lock_manager(now=clock, sleep=clock.sleep, lease=60)
    assert dead.try_acquire(["db"], "dead-run", "p1") == []
    clock.t += 59
    assert live.try_acquire(["db"], "live-run", "p2") != []

    async def wait_for_it() -> None:
        await live.acquire(["db"], "live-run", "p2", wait=True, wait_timeout=10, poll=1)

    asyncio.run(wait_for_it())  # the fake clock moves on while it polls: the lease runs out
    assert [h.holder for h in live.holders()] == ["live-run"]
    live_store.close()


def test_a_run_started_on_one_host_resumes_on_another(pg_url):
    one, two = PostgresStateStore(pg_url), PostgresStateStore(pg_url)
    run, resumed = one.start_run("d1", "run-1", "plan", "plans/p.yaml", 1.0)
    assert not resumed and run.invocations == 1
    one.begin_attempt("d1", "step", "a", 1, "d1:a", 2.0)
    one.complete_step("d1", "step", "a", 1, {"x": "1"}, {}, 3.0)
    one.begin_attempt("d1", "step", "b", 1, "d1:b", 4.0)  # ... host one dies here
    run, resumed = two.start_run("d1", "run-2", "plan", "plans/p.yaml", 5.0)
    assert resumed and run.run_id == "run-1" and run.invocations == 2
    assert list(two.completed("d1", "step")) == ["a"]
    assert [(a.step_id, a.status) for a in two.running_attempts("d1")] == [("b", "running")]
    one.close()
    two.close()


def test_factory_picks_postgres_from_the_url_else_sqlite(tmp_path, pg_url):
    store = open_state_store(tmp_path, database_url=pg_url)
    assert isinstance(store, PostgresStateStore)
    assert not (tmp_path / "state.db").exists()
    store.close()
    local = state_store_for(Settings(data_dir=tmp_path))
    assert local.location == str(tmp_path / "state.db")
    local.close()


def test_unreachable_database_names_the_variable_without_the_password():
    with pytest.raises(
        InputError, match=r"PLANGATE_DATABASE_URL=postgresql://u:\*\*\*@127\.0\.0\.1:1/x"
    ) as exc:
        PostgresStateStore("postgresql://u:s3cret@127.0.0.1:1/x")
    assert "s3cret" not in str(exc.value) and "s3cret" not in exc.value.diagnostics()


def test_the_state_port_imports_no_database_driver():
    """``app.execute.store`` is the runner's port: no sqlite3, no psycopg, no I/O."""
    import ast
    from pathlib import Path

    import app.execute.store as port

    tree = ast.parse(Path(port.__file__).read_text())
    imported = {
        (n.module or "") if isinstance(n, ast.ImportFrom) else a.name
        for n in ast.walk(tree)
        if isinstance(n, ast.Import | ast.ImportFrom)
        for a in n.names
    }
    assert not {m for m in imported if m.split(".")[0] in {"sqlite3", "psycopg", "os"}}
