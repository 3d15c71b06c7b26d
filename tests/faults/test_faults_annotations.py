"""Check-run annotations land exactly once when GitHub applies an update but its answer is lost.

GitHub appends the annotations of every ``checks/update``; a plan with 120 errors is published as
a create (50 annotations) and two updates (50, 20). Each test fails one of those updates in a way
a naive retry would repeat, and asserts every annotation is on the run once.
"""

from __future__ import annotations

from collections import Counter

import pytest
from faultkit import World, make_world
from srvkit import BASE, HEAD, POLICY, REPO, webhook_fixture

CHECK_UPDATE = r"/repos/[^/]+/[^/]+/check-runs/\d+$"
ERRORS = 120
PLAN = (
    "apiVersion: plangate.dev/v1\nkind: Plan\nid: many-errors\ntitle: Many errors\n"
    "team: platform\nenvironment: local\nsteps:\n"
    + "".join(f"  - id: s{i}\n    action: nope{i}\n" for i in range(ERRORS))
)


@pytest.fixture
def world(tmp_path, private_key):
    w = make_world(tmp_path, private_key, seed=3)
    w.fake.repo(REPO).commit(
        {"README.md": "hi\n", "policies/teams.yaml": POLICY, "plans/hello.yaml": PLAN},
        branch="changes",
        sha=HEAD,
    )
    assert BASE in w.fake.repo(REPO).commits
    yield w
    w.server.shutdown()
    w.server.server_close()


def _annotations_once(world: World) -> None:
    run = world.fake.runs_for(HEAD)["plangate/validate"]
    assert run["conclusion"] == "failure"
    copies = Counter((a["path"], a["start_line"], a["message"]) for a in run["annotations"])
    assert len(copies) == ERRORS
    assert max(copies.values()) == 1, f"{sum(copies.values()) - ERRORS} annotations repeated"
    assert world.fake.schema_errors == []


def _deliver(world: World) -> None:
    assert world.post("pull_request", webhook_fixture("pull_request.opened")).status_code == 202
    world.drain()
    assert world.deps.inbox.counts() == {"done": 1}


@pytest.mark.parametrize("kind", ["status", "reset"])
def test_annotation_update_applied_then_lost_is_not_sent_again(world, kind):
    # the first annotation update (annotations 51-100) is applied, then answered by a 502 or a
    # reset connection: the retry reads the run's annotations, finds them and stops
    world.faults.add("PATCH", CHECK_UPDATE, kind, status=502, first=1, applied=True)
    _deliver(world)
    _annotations_once(world)
    assert world.faults.count(kind) == 1
    assert world.fake.calls_to("GET", r"/check-runs/\d+/annotations$")  # the read happened


def test_last_annotation_batch_applied_then_5xx(world):
    # the second update (annotations 101-120) is the one applied but unconfirmed
    world.faults.add("PATCH", CHECK_UPDATE, status=500, after=1, first=1, applied=True)
    _deliver(world)
    _annotations_once(world)


def test_retried_delivery_does_not_repeat_annotations_of_the_run_it_adopts(world):
    # an annotation update fails on every adapter attempt (not applied): the delivery fails
    # after the run was created with its first 50; the retried delivery updates that run
    world.faults.add("PATCH", CHECK_UPDATE, status=502, first=4)
    _deliver(world)
    (delivery,) = world.deps.inbox.list()
    assert delivery.attempts == 2
    _annotations_once(world)


def test_no_annotation_read_when_nothing_fails(world):
    _deliver(world)
    _annotations_once(world)
    assert world.fake.calls_to("GET", r"/check-runs/\d+/annotations$") == []
