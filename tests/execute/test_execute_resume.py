"""A paused run resumes in a later workflow run, on a fresh runner, without repeating a step.

The executor's state travels between workflow runs as a signed copy on the attestation branch
(``app.execute.state_carry``); a copy whose signature or digest does not match is refused.
Same world as ``test_execute_github`` (real checkout, fake GitHub with the git data API).
"""

from __future__ import annotations

import shutil

from cryptography.hazmat.primitives import serialization

from app.execute.state_carry import STATE_PATH
from tests.execute import test_execute_github as base
from tests.execute.test_execute_github import BRANCH, PLAN, PR, _git, execute

world = base.world

PAUSING = """apiVersion: plangate.dev/v1
kind: Plan
id: local-hello
title: pauses when its runner-minute budget is spent
team: platform
environment: local
budget:
  runner_minutes: {hard: HARD}
  on_hard_limit: pause
steps:
  - id: first
    action: shell
    with:
      run: [python3, -c, "open('.plangate/first', 'a').write('x')"]
    compensate:
      action: shell
      with: {run: [python3, -c, "pass"]}
    timeout: 10s
  - id: second
    action: shell
    needs: [first]
    with:
      run: [python3, -c, "open('.plangate/second', 'a').write('x')"]
    compensate:
      action: shell
      with: {run: [python3, -c, "pass"]}
    timeout: 10s
"""


def _key(world, tmp_path):
    path = tmp_path / "executor.pem"
    path.write_bytes(
        world.signer._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(path)


def _fresh_runner(world) -> None:
    """A new workflow run starts on an empty runner: no data dir."""
    shutil.rmtree(world.root.parent / "data", ignore_errors=True)


def _merge_budget_raise(world, number: int) -> None:
    """A second pull request raises only the budget; it is approved and squash-merged."""
    r = world.root
    _git(r, "checkout", "-q", "-b", f"raise-{number}", world.after)
    (r / PLAN).write_text(PAUSING.replace("HARD", "60"))
    _git(r, "add", PLAN)
    _git(r, "commit", "-q", "-m", "raise the budget")
    head = _git(r, "rev-parse", "HEAD")
    _git(r, "checkout", "-q", "main")
    _git(r, "merge", "-q", "--squash", f"raise-{number}")
    _git(r, "commit", "-q", "-m", f"raise the budget (#{number})")
    before, world.after, world.head = world.after, _git(r, "rev-parse", "HEAD"), head
    world.gh.pulls = [world.gh._pull(number, world.after, head)]
    world.attest(pr=number, store_pr=number)
    world.base = before


def _counts(world) -> tuple[str, str]:
    d = world.root / ".plangate"
    read = lambda name: (d / name).read_text() if (d / name).exists() else ""  # noqa: E731
    return read("first"), read("second")


def test_paused_run_resumes_after_a_budget_raise_on_a_fresh_runner(world, tmp_path):
    key = _key(world, tmp_path)
    world.build(plan_text=PAUSING.replace("HARD", "0.0000001"))
    world.attest()
    assert execute(world, "--signing-key", key) == 4  # paused: budget spent after 'first'
    assert _counts(world) == ("x", "")
    assert "Run state carried" in world.gh.summary()
    assert STATE_PATH in world.gh.git.files(BRANCH)

    _merge_budget_raise(world, PR + 1)
    _fresh_runner(world)
    world.gh.check_runs.clear()
    assert execute(world, "--signing-key", key) == 0, world.gh.summary()
    assert _counts(world) == ("x", "x")  # 'first' did not run again
    # read as a git blob: the contents API returns no content above 1 MB
    assert any(m == "GET" and "/git/blobs/" in p for m, p, _ in world.gh.requests)
    summary = world.gh.summary()
    assert "Run state restored" in summary and "(signature verified)" in summary


def test_rerun_of_a_finished_workflow_repeats_nothing(world, tmp_path):
    key = _key(world, tmp_path)
    world.build(plan_text=PAUSING.replace("HARD", "60"))
    world.attest()
    assert execute(world, "--signing-key", key) == 0
    _fresh_runner(world)  # "Re-run all jobs": a new runner, the same push
    world.gh.check_runs.clear()
    assert execute(world, "--signing-key", key) == 0
    assert _counts(world) == ("x", "x")
    assert "already ended 'succeeded'; nothing ran" in world.gh.summary()


def test_tampered_carried_state_refuses_every_plan(world, tmp_path):
    key = _key(world, tmp_path)
    world.build(plan_text=PAUSING.replace("HARD", "60"))
    world.attest()
    assert execute(world, "--signing-key", key) == 0
    git = world.gh.git
    files = git.files(BRANCH)
    files[STATE_PATH] = files[STATE_PATH][:-1] + b"\x01"  # one byte changed
    tip = git.refs[f"refs/heads/{BRANCH}"]
    git.refs[f"refs/heads/{BRANCH}"] = git.commit(files, [tip], "someone edits the state")
    _fresh_runner(world)
    world.gh.check_runs.clear()
    assert execute(world, "--signing-key", key) == 1  # refused: fail closed
    summary = world.gh.summary()
    assert "Carried state refused" in summary and "(digest check)" in summary
    assert _counts(world) == ("x", "x")  # nothing ran: neither skipped on forged state nor repeated
    assert world.gh.conclusion() == "failure"


def test_carried_state_without_a_signer_to_verify_it_refuses(world, tmp_path):
    key = _key(world, tmp_path)
    world.build(plan_text=PAUSING.replace("HARD", "60"))
    world.attest()
    assert execute(world, "--signing-key", key) == 0
    _fresh_runner(world)
    world.gh.check_runs.clear()
    assert execute(world, "--attest-run", "off") == 1
    assert "(signer check)" in world.gh.summary()
    assert _counts(world) == ("x", "x")


def test_without_a_signer_state_is_not_carried(world):
    world.build(plan_text=PAUSING.replace("HARD", "60"))
    world.attest()
    assert execute(world) == 0
    assert STATE_PATH not in world.gh.git.files(BRANCH)
    assert "Run state NOT carried" in world.gh.summary()


def test_resume_flag_refuses_when_there_is_nothing_to_resume(world, tmp_path):
    key = _key(world, tmp_path)
    world.build(plan_text=PAUSING.replace("HARD", "60"))
    world.attest()
    assert execute(world, "--signing-key", key, "--resume") == 1
    assert "no earlier run state to resume" in world.gh.summary()
    assert _counts(world) == ("", "")
