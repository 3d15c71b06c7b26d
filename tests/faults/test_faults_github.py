"""Fault injection between Plangate and GitHub: outages, rate limits, resets, slow answers,
duplicate and out-of-order deliveries. Each test asserts the final state on the fake GitHub.
"""

from __future__ import annotations

import copy

import pytest
from faultkit import EXPECTED, NAMES, World, make_world
from srvkit import HEAD, webhook_fixture

from app.errors import RateLimited

CHECK_CREATE = r"/repos/[^/]+/[^/]+/check-runs$"
CHECK_UPDATE = r"/repos/[^/]+/[^/]+/check-runs/\d+$"


@pytest.fixture
def world(tmp_path, private_key):
    w = make_world(tmp_path, private_key, seed=9)
    yield w
    w.server.shutdown()
    w.server.server_close()


def _final(world: World, head: str) -> None:
    """One finished set of check runs on ``head`` with the fault-free conclusions."""
    runs = world.fake.runs_for(head)
    assert set(runs) == set(NAMES)
    assert all(r["status"] == "completed" for r in runs.values())
    assert world.conclusions(head) == EXPECTED
    assert world.fake.schema_errors == []


def test_outage_during_check_run_updates_recovers_with_one_set_of_runs(world):
    f = world.faults
    f.add("POST", r"/access_tokens$", status=502, first=1)
    f.add("GET", r"/pulls/2/files", "reset", first=1)
    f.add("GET", r"/(contents|git)/", "slow", delay=0.05, probability=0.5)
    f.add("POST", CHECK_CREATE, status=500, first=1)  # retried inside the adapter
    # the third creation fails on all 4 attempts: the delivery fails after two runs exist ...
    f.add("POST", CHECK_CREATE, status=502, after=3, first=4)
    # ... and its retry updates those two (through more 500s) instead of creating them again
    f.add("PATCH", CHECK_UPDATE, status=500, first=2)

    assert world.post("pull_request", webhook_fixture("pull_request.opened")).status_code == 202
    world.drain()

    _final(world, HEAD)
    assert world.creations(HEAD) == 4  # no duplicate check run despite the retried delivery
    assert world.deps.inbox.counts() == {"done": 1}
    (delivery,) = world.deps.inbox.list()
    assert delivery.attempts == 2
    assert f.count("status", 500) == 3 and f.count("status", 502) == 5
    assert f.count("reset") == 1 and f.count("slow") >= 1
    print(f"injected={len(f.injected)} slow={f.count('slow')}")


def test_secondary_rate_limit_and_429_are_honoured(world):
    f = world.faults
    secondary = {"retry-after": "3"}
    f.add(
        "POST",
        CHECK_CREATE,
        status=403,
        headers=secondary,
        message="You have exceeded a secondary rate limit",
        first=2,
    )
    f.add("GET", r"/pulls/2/files", status=429, headers={"retry-after": "2"}, first=1)

    assert world.post("pull_request", webhook_fixture("pull_request.opened")).status_code == 202
    world.drain()

    _final(world, HEAD)
    assert world.creations(HEAD) == 4
    # the adapter waited exactly what GitHub asked for, before each retry
    assert world.sleeps.count(3.0) == 2 and world.sleeps.count(2.0) == 1
    assert world.deps.inbox.counts() == {"done": 1}
    assert f.count("status", 403) == 2 and f.count("status", 429) == 1


def test_long_rate_limit_reschedules_the_delivery_instead_of_sleeping(world):
    f = world.faults
    f.add("POST", CHECK_CREATE, status=403, headers={"retry-after": "120"}, first=1)

    world.post("pull_request", webhook_fixture("pull_request.opened"))
    world.drain()
    assert 120.0 not in world.sleeps  # never slept in the worker thread
    assert world.deps.inbox.counts() == {"queued": 1}  # rescheduled, not lost, not dead
    assert world.fake.runs_for(HEAD) == {}
    assert world.drain() == 0  # not due yet

    world.offset[0] = 121.0  # GitHub's window has passed
    world.drain()
    _final(world, HEAD)
    assert world.creations(HEAD) == 4
    assert world.deps.inbox.counts() == {"done": 1}


def test_rate_limit_error_carries_the_wait():
    """The mapping the scenarios above rely on (guards against a silent default)."""
    from app.github.client import map_error

    err = map_error(403, {"Retry-After": "7"}, {"message": "secondary rate limit"}, now=0)
    assert isinstance(err, RateLimited) and err.retry_after == 7.0


def _sync(head: str, before: str) -> dict:
    payload = copy.deepcopy(webhook_fixture("pull_request.synchronize"))
    payload["pull_request"]["head"]["sha"] = head
    payload["before"], payload["after"] = before, head
    return payload


def _review(head: str) -> dict:
    payload = copy.deepcopy(webhook_fixture("pull_request_review.submitted"))
    payload["pull_request"]["head"]["sha"] = head
    return payload


def test_duplicate_and_out_of_order_deliveries(world):
    repo = world.fake.repo("Codertocat/Hello-World")
    world.post("pull_request", webhook_fixture("pull_request.opened"), delivery="d-open")
    world.drain()
    _final(world, HEAD)

    # a push: the plan at the new head is broken, so its checks differ from the old head's
    newer = repo.commit({**repo.commits[HEAD], "plans/hello.yaml": b"steps: [\n"}, sha="1" * 40)
    repo.pulls[2].head_sha = newer
    # the review of the new head arrives before the synchronize announcing it
    assert world.post("pull_request_review", _review(newer)).status_code == 202
    assert world.post("pull_request", _sync(newer, HEAD), delivery="d-new").status_code == 202
    assert world.post("pull_request", _sync(newer, HEAD), delivery="d-new").status_code == 200
    # a late synchronize for the old head (GitHub does not guarantee order)
    assert world.post("pull_request", _sync(HEAD, "0" * 40), delivery="d-old").status_code == 202
    world.drain()

    runs = world.fake.runs_for(newer)
    assert set(runs) == set(NAMES)
    assert runs["plangate/validate"]["conclusion"] == "failure"
    created = [r["name"] for r in world.fake.check_runs.values() if r["head_sha"] == newer]
    # the duplicate delivery was not processed: one run per name from the synchronize
    # (plus the approval run the earlier review delivery published on its own)
    for name in NAMES[:3]:
        assert created.count(name) == 1, created
    assert created.count("plangate/approval") <= 2
    # the old head keeps exactly its first set: the late synchronize's work was dropped
    assert world.creations(HEAD) == 4, world.deps.inbox.counts()
    assert world.conclusions(HEAD) == EXPECTED
    assert "queued" not in world.deps.inbox.counts() and "dead" not in world.deps.inbox.counts()
