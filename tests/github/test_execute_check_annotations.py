"""``plangate execute`` completes ``plangate/execute`` so that each annotation lands once.

GitHub appends the annotations of every check-run update. The executor's final update and its
follow-up batches (50 annotations each) go through ``update_check_run_batches``: an update that
GitHub applied but answered with a 5xx is not sent again. The fake GitHub (``ghfake``) serves
``checks/list-annotations`` and can fail a request after applying it.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from clientkit import HEAD, annotation_copies, fake_repo_client

from app.cli.execute import RestExecuteGitHub, _finish_check
from app.execute import github_mode as gm


@pytest.fixture
def world(app_key):
    with fake_repo_client(app_key) as (fake, client):
        # as plangate execute starts it: in progress, no annotations
        run_id = client.create_check_run(
            {
                "name": gm.CHECK_NAME,
                "head_sha": HEAD,
                "status": "in_progress",
                "output": {"title": "Executing", "summary": "Plans"},
            }
        )
        yield fake, RestExecuteGitHub(client), run_id


def _finish(github: RestExecuteGitHub, run_id: int, refused: int) -> None:
    ctx = SimpleNamespace(after=HEAD, run_url="https://ghes.example.com/octo/ops/actions/runs/1")
    outcomes = [
        gm.PlanOutcome(path=f"plans/p{i:03}.yaml", refusal=f"no attestation {i}")
        for i in range(refused)
    ]
    _finish_check(github, run_id, ctx, outcomes, (), [], None)


@pytest.mark.parametrize("status", [500, 502])
def test_follow_up_batch_applied_then_5xx_is_not_repeated(world, status):
    fake, github, run_id = world
    # batch 1 (with the conclusion) goes through; batch 2 is applied, then answered with a 5xx
    sent: list[int] = []
    original = github.client.transport.request

    def request(verb, path, **kw):  # fail the second PATCH after GitHub applied it
        if verb == "PATCH" and path.endswith(f"/check-runs/{run_id}"):
            sent.append(1)
            if len(sent) == 2:
                fake.fail("PATCH", r"/check-runs/\d+$", status=status, times=1, applied=True)
        return original(verb, path, **kw)

    github.client.transport.request = request
    _finish(github, run_id, 120)
    copies = annotation_copies(fake, run_id)
    assert len(copies) == 120 and set(copies.values()) == {1}  # each annotation once
    assert fake.check_runs[run_id]["conclusion"] == "failure"
    assert fake.schema_errors == []


def test_first_update_applied_then_5xx_is_not_repeated(world):
    fake, github, run_id = world
    fake.fail("PATCH", r"/check-runs/\d+$", status=502, times=1, applied=True)
    _finish(github, run_id, 70)
    copies = annotation_copies(fake, run_id)
    assert len(copies) == 70 and set(copies.values()) == {1}
    assert fake.check_runs[run_id]["status"] == "completed"


def test_update_not_applied_is_retried_and_lands_once(world):
    fake, github, run_id = world
    fake.fail("PATCH", r"/check-runs/\d+$", status=500, times=1)
    _finish(github, run_id, 60)
    copies = annotation_copies(fake, run_id)
    assert len(copies) == 60 and set(copies.values()) == {1}


def test_without_faults_no_annotation_is_read_back(world):
    fake, github, run_id = world
    _finish(github, run_id, 120)
    assert len(annotation_copies(fake, run_id)) == 120
    assert fake.calls_to("GET", r"/annotations$") == []  # no extra request when all succeed
    assert len(fake.calls_to("PATCH", r"/check-runs/\d+$")) == 3
