"""``plangate execute --queue-request``: a retry the App recorded, and cancels seen mid-run.

Same world as ``test_execute_github`` (real checkout, fake GitHub with the git data API, every
body validated against ``@octokit/openapi``). The App's request record is written on the
attestation branch as the App would (``QueueRequest.to_json``); a ``workflow_dispatch`` without
one runs nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.audit.git_store import GitAuditStore
from app.execute.queue import (
    REQUEST_PAYLOAD_TYPE,
    QueuePlan,
    QueueRequest,
    cancel_path,
    request_id_for,
    request_path,
)
from app.execute.state import StateStore
from tests.execute import test_execute_github as base
from tests.execute.test_execute_github import BRANCH, PLAN, REPO, _git, execute

world = base.world

FLAKY = """apiVersion: plangate.dev/v1
kind: Plan
id: local-hello
title: fails until a flag file exists
team: platform
environment: local
steps:
  - id: write
    action: shell
    with:
      run: [python3, -c, "open('.plangate/write', 'a').write('x')"]
    compensate:
      action: shell
      with: {run: [python3, -c, "open('.plangate/undo', 'a').write('x')"]}
    timeout: 10s
  - id: check
    action: shell
    mutates: false
    needs: [write]
    with:
      run: [python3, -c, "import os, sys; sys.exit(0 if os.path.exists('.plangate/flag') else 1)"]
    retry: {max_attempts: 1}
    timeout: 10s
"""

THREE = """apiVersion: plangate.dev/v1
kind: Plan
id: local-hello
title: three steps, the second takes a moment
team: platform
environment: local
steps:
  - id: first
    action: shell
    with:
      run: [python3, -c, "open('.plangate/first', 'a').write('x')"]
    compensate:
      action: shell
      with: {run: [python3, -c, "open('.plangate/undo-first', 'a').write('x')"]}
    timeout: 10s
  - id: second
    action: shell
    needs: [first]
    with:
      run: [python3, -c, "open('.plangate/second', 'a').write('x')"]
    compensate:
      action: shell
      with: {run: [python3, -c, "open('.plangate/undo-second', 'a').write('x')"]}
    timeout: 10s
  - id: third
    action: shell
    needs: [second]
    with:
      run: [python3, -c, "open('.plangate/third', 'a').write('x')"]
    compensate:
      action: shell
      with: {run: [python3, -c, "pass"]}
    timeout: 10s
"""


def _write(world, path: str, data: bytes) -> None:
    """A file on the attestation branch, as the App writes it (a new commit)."""
    git = world.gh.git
    ref = f"refs/heads/{BRANCH}"
    parent = git.refs.get(ref)
    files = git.files(BRANCH) if parent else {}
    files[path] = data
    git.refs[ref] = git.commit(files, [parent] if parent else [], f"app: {path}")


def _request(world, *, actor: str = "alice", delivery: str = "press-1", **kw) -> QueueRequest:
    fields = dict(
        id=request_id_for("retry", delivery),
        verb="retry",
        actor=actor,
        repository=REPO,
        commit=world.after,
        plans=(QueuePlan(PLAN, world.plan_digest()),),
        verdict="allow",
        rules=("queue.platform.retry",),
        reasons=(f"{actor} may retry plans of team platform",),
        policy_digest="sha256:" + "0" * 64,
        requested_at=datetime.now(UTC) - timedelta(minutes=1),
        check_run_id=1,
        delivery_id=delivery,
    )
    fields.update(kw)
    return QueueRequest(**fields)


def _signed(world, request: QueueRequest, signer=None) -> bytes:
    """As the App stores it: a DSSE envelope by its key (the test key is in the policy)."""
    return (signer or world.signer).sign(REQUEST_PAYLOAD_TYPE, request.to_json())


def _record(world, request: QueueRequest, *, document: bytes | None = None) -> str:
    _write(world, request_path(request.id), document or _signed(world, request))
    return request.id


def _failed_run(world) -> None:
    world.build(plan_text=FLAKY)
    world.attest()
    assert execute(world) == 3  # 'check' fails, 'write' is undone
    assert (world.root / ".plangate" / "undo").exists()
    world.gh.check_runs.clear()
    (world.root / ".plangate" / "flag").write_text("fixed")


def _status(world) -> str:
    state = StateStore.open(world.root.parent / "data")
    try:
        return state.get_run(world.plan_digest()).status
    finally:
        state.close()


def test_workflow_dispatch_without_an_app_written_request_is_refused(world, capsys):
    _failed_run(world)
    request_id = request_id_for("retry", "never-recorded")
    assert execute(world, "--queue-request", request_id) == 1
    err = capsys.readouterr().err
    assert f"no queue request {request_id} on {BRANCH}" in err
    assert "a bare workflow_dispatch runs nothing" in err
    assert world.gh.check_runs == {}  # nothing ran, nothing reported as run
    assert _status(world) == "compensated"


def test_app_recorded_retry_starts_the_rolled_back_run_over_and_is_used_once(world, capsys):
    _failed_run(world)
    request_id = _record(world, _request(world))
    assert execute(world, "--queue-request", request_id) == 0, world.gh.summary()
    assert (world.root / ".plangate" / "write").read_text() == "xx"  # started over
    assert "Retry requested by @alice" in world.gh.summary()
    assert _status(world) == "succeeded"
    files = world.gh.git.files(BRANCH)
    assert request_path(request_id) + ".used" in files
    # the request is in the git audit trail, under the run's correlation id
    store = GitAuditStore(world.root)
    try:
        (event,) = [e for e in store.events() if e.type == "queue.requested"]
        assert store.verify().ok
    finally:
        store.close()
    assert (event.actor.id, event.payload["verb"], event.payload["verdict"]) == (
        "alice",
        "retry",
        "allow",
    )
    assert event.payload["rule"] == "queue.platform.retry"
    assert event.payload["via"] == "github:check_run/1"
    # a second dispatch with the same request (a replay) runs nothing
    world.gh.check_runs.clear()
    capsys.readouterr()
    assert execute(world, "--queue-request", request_id) == 1
    assert "was already used" in capsys.readouterr().err
    assert world.gh.check_runs == {}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"verdict": "deny"}, "policy denied it"),
        ({"repository": "evil/ops"}, "it is for evil/ops"),
        ({"requested_at": datetime.now(UTC) - timedelta(days=1)}, "valid for 6 h"),
    ],
)
def test_a_request_the_app_did_not_allow_runs_nothing(world, capsys, change, message):
    _failed_run(world)
    request_id = _record(world, _request(world, **change))
    assert execute(world, "--queue-request", request_id) == 1
    assert message in capsys.readouterr().err
    assert _status(world) == "compensated"


def test_a_request_for_a_commit_not_on_the_default_branch_is_refused(world, capsys):
    _failed_run(world)
    request_id = _record(world, _request(world, commit=world.head))  # the PR branch's head
    assert execute(world, "--queue-request", request_id) == 1
    assert "is not on the default branch" in capsys.readouterr().err


def test_a_retry_the_default_branch_policy_no_longer_allows_is_refused(world, capsys):
    _failed_run(world)
    merge = world.after
    request_id = _record(world, _request(world, actor="carol"))  # sre may retry today
    teams = world.root / "policies" / "teams.yaml"
    teams.write_text(
        teams.read_text().replace("    retry: [platform, sre]\n", "    retry: [platform]\n", 1)
    )
    _git(world.root, "commit", "-q", "-am", "only platform retries platform plans")
    world.after = _git(world.root, "rev-parse", "HEAD")  # the default branch's tip, checked out
    assert merge != world.after
    assert execute(world, "--queue-request", request_id) == 1
    err = capsys.readouterr().err
    assert "no longer lets carol retry" in err and "queue.platform.retry" in err
    assert _status(world) == "compensated"


def test_check_run_buttons_and_external_id_on_plangate_execute(world):
    world.build(plan_text=FLAKY)
    world.attest()
    assert execute(world, "--queue-buttons", "on") == 3
    (run,) = world.gh.check_runs.values()
    progress = [u for u in run["updates"] if u.get("status") == "in_progress"]
    assert progress and progress[0]["actions"][0]["identifier"] == "cancel"
    digest = world.plan_digest().removeprefix("sha256:")[:16]
    assert progress[0]["external_id"] == f"pgx1;{PLAN}={digest}"
    final = world.gh.final()
    assert [a["identifier"] for a in final["actions"]] == ["retry"]
    assert final["external_id"] == f"pgx1;{PLAN}={digest}"
    # without the option (the default outside the workflow), no buttons
    world.gh.check_runs.clear()
    assert execute(world) == 3
    assert "actions" not in world.gh.final()


def test_a_cancel_recorded_by_the_app_stops_the_run_before_its_next_step(world, monkeypatch):
    """The App records the cancel while 'second' runs: 'third' never starts, 'second' and
    'first' are undone (the saga), the run ends cancelled, and a later retry is refused."""
    import app.cli.execute as cli_execute

    world.build(plan_text=THREE)
    world.attest()
    cancel = QueueRequest(
        id=request_id_for("cancel", "press-2"),
        verb="cancel",
        actor="judy",
        repository=REPO,
        commit=world.after,
        plans=(QueuePlan(PLAN, world.plan_digest()),),
        verdict="allow",
        rules=("queue.platform.cancel",),
        reasons=("judy may cancel plans of team platform (via security)",),
        policy_digest="sha256:" + "0" * 64,
        requested_at=datetime.now(UTC),
    )
    original = cli_execute._CancelRequests.__call__

    def app_presses_cancel_during_second(self, digest):  # type: ignore[no-untyped-def]
        if (world.root / ".plangate" / "second").exists() and not self._found:
            _write(world, cancel_path(digest), _signed(world, cancel))
        self._checked.clear()  # no throttling in the test: check before every step
        return original(self, digest)

    monkeypatch.setattr(cli_execute._CancelRequests, "__call__", app_presses_cancel_during_second)
    assert execute(world, "--queue-buttons", "on") == 3
    d = world.root / ".plangate"
    assert (d / "first").exists() and (d / "second").exists()
    assert not (d / "third").exists()
    assert (d / "undo-second").exists() and (d / "undo-first").exists()
    summary = world.gh.summary()
    assert "cancelled before step 'third'" in summary and "judy" in summary
    assert _status(world) == "cancelled"
    # a retry of a cancelled run is refused (as plangate retry)
    world.gh.check_runs.clear()
    request_id = _record(world, _request(world, delivery="press-3"))
    assert execute(world, "--queue-request", request_id) == 1
    assert "ended 'cancelled'; there is nothing to retry" in world.gh.summary()


PAUSES = """apiVersion: plangate.dev/v1
kind: Plan
id: local-hello
title: pauses when its runner-minute budget is spent
team: platform
environment: local
budget:
  runner_minutes: {hard: 0.0000001}
  on_hard_limit: pause
steps:
  - id: first
    action: shell
    with:
      run: [python3, -c, "open('.plangate/first', 'a').write('x')"]
    compensate:
      action: shell
      with: {run: [python3, -c, "open('.plangate/undo-first', 'a').write('x')"]}
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


def test_cancel_of_a_paused_run_dispatched_by_the_app_undoes_what_it_changed(world):
    """Cancel pressed on a paused run (no workflow going): the App dispatches the workflow
    with the cancel's id; the executor marks the run cancelled and compensates 'first'."""
    world.build(plan_text=PAUSES)
    world.attest()
    assert execute(world) == 4  # paused after 'first'
    world.gh.check_runs.clear()
    request = _request(world, actor="judy", delivery="press-4")
    request = QueueRequest(
        **{
            **request.__dict__,
            "id": request_id_for("cancel", "press-4"),
            "verb": "cancel",
            "rules": ("queue.platform.cancel",),
        }
    )
    request_id = _record(world, request)
    assert execute(world, "--queue-request", request_id) == 3
    d = world.root / ".plangate"
    assert (d / "undo-first").exists() and not (d / "second").exists()
    assert _status(world) == "cancelled"
    assert "undoing what the run changed" in world.gh.summary()
    store = GitAuditStore(world.root)
    try:
        (event,) = [e for e in store.events() if e.type == "queue.requested"]
    finally:
        store.close()
    assert (event.actor.id, event.payload["verb"]) == ("judy", "cancel")


def test_an_unsigned_or_foreign_signed_request_is_refused(world, capsys):
    """A workflow that can write the attestation branch (GITHUB_TOKEN, contents: write) could
    write a record; only the App's signature (a key in the policy's signers) makes it one."""
    from app.signing.local_key import LocalKeySigner, generate_private_key

    _failed_run(world)
    request = _request(world)
    request_id = _record(world, request, document=request.to_json())
    assert execute(world, "--queue-request", request_id) == 1
    assert "the queue request is not signed" in capsys.readouterr().err
    other = _request(world, delivery="press-9")
    forged = _signed(world, other, LocalKeySigner(generate_private_key()))
    assert execute(world, "--queue-request", _record(world, other, document=forged)) == 1
    assert "signer" in capsys.readouterr().err
    assert _status(world) == "compensated"
    # an App without a key (keyless approvals): only with the named unsafe switch
    assert execute(world, "--queue-request", request_id, "--unsafe-unsigned-queue-requests") == 0
    assert "accepting an unsigned queue request" in capsys.readouterr().err
