"""``plangate execute``: the lock lease and clock-skew allowance come from the environment.

``PLANGATE_LOCK_LEASE_SECONDS`` (default 300) and ``PLANGATE_LOCK_SKEW_SECONDS`` (default 30),
validated at start-up: a bad value is exit 2 naming the variable, before anything runs or any
check run is created. Same world as ``test_execute_github`` (real checkout, fake GitHub).
"""

from __future__ import annotations

import time

import pytest

from app.errors import InputError
from app.execute.github_locks import Lease, lock_ref
from app.settings import Settings
from tests.execute import test_execute_github as base
from tests.execute.test_execute_github import execute

world = base.world

RESOURCE = "local/scratch"  # what the example plan declares


def _first_lease(world) -> Lease:
    """The lease the run took (the ref's root commit: later commits renew or release it)."""
    history = world.gh.git.history(lock_ref(RESOURCE))
    lease = Lease.parse(world.gh.git.commits[history[-1]]["message"])
    assert lease is not None
    return lease


def test_defaults_are_documented_values():
    settings = Settings.from_env({})
    assert (settings.lock_lease_seconds, settings.lock_skew_seconds) == (300.0, 30.0)


def test_configured_lease_is_the_lease_written_to_the_lock_ref(world, monkeypatch):
    monkeypatch.setenv("PLANGATE_LOCK_LEASE_SECONDS", "90")
    world.build()
    world.attest()
    before = time.time()
    assert execute(world) == 0
    after = time.time()
    lease = _first_lease(world)
    assert before + 90 <= lease.expires_at <= after + 90  # not the default 300


def test_configured_skew_decides_when_an_expired_lease_is_taken_over(world, monkeypatch):
    # a lease that ran out 100 s ago: taken over with the default skew (30 s) ...
    world.build()
    world.attest()
    dead = Lease(RESOURCE, "run-dead", "other-plan", time.time() - 100)
    sha = world.gh.git.commit({"README.md": b"lock"}, [], dead.message())
    world.gh.git.refs[lock_ref(RESOURCE)] = sha
    monkeypatch.setenv("PLANGATE_LOCK_SKEW_SECONDS", "600")
    # ... but still held with a 600 s allowance for clock differences
    assert execute(world) == 1
    assert "'local/scratch' is held by plan other-plan (run run-dead" in world.gh.summary()
    assert world.gh.git.refs[lock_ref(RESOURCE)] == sha
    monkeypatch.setenv("PLANGATE_LOCK_SKEW_SECONDS", "30")
    world.gh.check_runs.clear()
    assert execute(world) == 0
    assert sha in world.gh.git.history(lock_ref(RESOURCE))


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("PLANGATE_LOCK_LEASE_SECONDS", "5m"),
        ("PLANGATE_LOCK_LEASE_SECONDS", "10"),  # renewals every 3 s would burn the rate limit
        ("PLANGATE_LOCK_LEASE_SECONDS", "inf"),
        ("PLANGATE_LOCK_SKEW_SECONDS", "-1"),
        ("PLANGATE_LOCK_SKEW_SECONDS", "nan"),
    ],
)
def test_bad_lock_setting_is_a_start_up_error_naming_the_variable(
    world, monkeypatch, capsys, var, value
):
    world.build()
    world.attest()
    monkeypatch.setenv(var, value)
    assert execute(world) == 2
    err = capsys.readouterr().err
    assert f"{var}={value!r} is not a number of seconds between" in err
    assert f"set {var} to a number of seconds" in err
    assert world.gh.check_runs == {} and not world.marker().exists()  # nothing started


def test_settings_error_names_the_variable():
    with pytest.raises(InputError, match=r"^PLANGATE_LOCK_SKEW_SECONDS='4000' is not a number"):
        Settings.from_env({"PLANGATE_LOCK_SKEW_SECONDS": "4000"})
