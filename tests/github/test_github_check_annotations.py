"""Annotations are appended by every check-run update: ``update_check_run_batches`` sends each once.

The fake GitHub serves ``checks/list-annotations`` in the shape of @octokit/openapi's example
(``openapi-execute-subset.json``) and can fail a request *after* applying it.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from clientkit import HEAD, annotation_copies, fake_repo_client

from app.github.checks import Annotation, CheckOutcome, check_run_requests

OPENAPI = json.loads(
    (
        Path(__file__).resolve().parents[1] / "fixtures/github/openapi-execute-subset.json"
    ).read_text()
)["operations"]


@pytest.fixture
def world(app_key):
    with fake_repo_client(app_key) as (fake, client):
        yield fake, client


def _bodies(n: int) -> tuple[dict, list[dict]]:
    outcome = CheckOutcome(
        "plangate/validate",
        "failure",
        f"{n} errors",
        "see annotations",
        annotations=tuple(
            Annotation("plans/x.yaml", i + 1, f"error {i}", title="action.unknown")
            for i in range(n)
        ),
    )
    return check_run_requests(outcome, head_sha=HEAD)


def test_listed_annotation_has_githubs_shape(world):
    _, client = world
    first, _ = _bodies(1)
    run_id = client.create_check_run(first)
    (listed,) = client.check_run_annotations(run_id)
    (example,) = OPENAPI["checks/list-annotations"]["examples"]["200"]
    assert set(listed) == set(example)
    assert listed["message"] == "error 0" and listed["annotation_level"] == "failure"


def test_annotation_list_is_read_across_pages(world):
    fake, client = world
    first, more = _bodies(230)
    run_id = client.create_check_run(first)
    client.update_check_run_batches(run_id, more, present=first["output"]["annotations"])
    assert len(client.check_run_annotations(run_id)) == 230
    assert len(fake.calls_to("GET", r"/annotations$")) == 3  # 100 per page


def test_update_applied_then_5xx_is_not_repeated(world):
    fake, client = world
    first, more = _bodies(120)
    run_id = client.create_check_run(first)
    fake.fail("PATCH", r"/check-runs/\d+$", status=502, times=1, applied=True)
    client.update_check_run_batches(run_id, more, present=first["output"]["annotations"])
    copies = annotation_copies(fake, run_id)
    assert len(copies) == 120 and set(copies.values()) == {1}
    assert len(fake.calls_to("PATCH", r"/check-runs/\d+$")) == 2  # 502 (applied), then batch 3


def test_update_not_applied_is_retried(world):
    fake, client = world
    first, more = _bodies(60)
    run_id = client.create_check_run(first)
    fake.fail("PATCH", r"/check-runs/\d+$", status=500, times=1)
    client.update_check_run_batches(run_id, more, present=first["output"]["annotations"])
    copies = annotation_copies(fake, run_id)
    assert len(copies) == 60 and set(copies.values()) == {1}
    assert [c.status for c in fake.calls_to("PATCH", r"/check-runs/\d+$")] == [500, 200]


def test_run_of_unknown_state_skips_the_batches_already_there(world):
    fake, client = world
    first, more = _bodies(120)
    run_id = client.create_check_run(first)
    client.update_check_run(run_id, more[0])  # an earlier attempt got this far
    update = {k: v for k, v in first.items() if k != "head_sha"}
    client.update_check_run_batches(run_id, [update, *more], present=None)
    copies = annotation_copies(fake, run_id)
    assert len(copies) == 120 and set(copies.values()) == {1}
    patches = [c.body for c in fake.calls_to("PATCH", r"/check-runs/\d+$")]
    # the first body still completes the run, without its annotations; batch 2 is skipped
    assert patches[1]["conclusion"] == "failure" and "annotations" not in patches[1]["output"]
    assert len(patches) == 3 and len(patches[2]["output"]["annotations"]) == 20
    assert fake.schema_errors == []


def test_a_repeated_annotation_within_the_outcome_is_kept_twice(world):
    # the same annotation twice in what we publish is content, not a retry artefact
    fake, client = world
    first, _ = _bodies(1)
    run_id = client.create_check_run(first)
    again = {"output": {**first["output"]}}
    fake.fail("PATCH", r"/check-runs/\d+$", status=502, times=1, applied=True)
    client.update_check_run_batches(run_id, [again], present=first["output"]["annotations"])
    assert annotation_copies(fake, run_id) == Counter({"error 0": 2})
