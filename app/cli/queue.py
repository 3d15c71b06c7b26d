"""``plangate retry PLAN`` and ``plangate cancel PLAN``: queue requests checked against policy.

Who may retry or cancel a team's plans is policy (``queue`` in policies/teams.yaml, judged by
``app.policy.engine.authorize``); a refusal names the rule and exits 1 before the state is
touched. The actor is ``--actor LOGIN`` (default: the local user).

- **retry** re-runs the recorded run of the plan's digest: a ``paused``, ``needs_attention`` or
  interrupted run resumes as is; a ``compensation_failed`` run forgets its failed compensations
  and resumes the saga (the run never goes forward again); a ``compensated``/``aborted`` run had
  every effect undone, so it starts over (like ``plangate run --restart``, but authorized). A
  succeeded or cancelled run is not retried.
- **cancel** marks the run ``cancelled`` in the state store and releases its locks. A run
  still active in another process stops before its next step (the runner checks the state's
  status before each step) and compensates what it changed; its own final status never
  overwrites the cancellation. A cancelled run that nothing is running but that changed things
  (paused) is compensated by the next ``plangate run`` of the digest, which goes no further;
  after that (or if it changed nothing) ``plangate run`` refuses (exit 1) until ``--restart``.

Every request, allowed or denied, is recorded twice: in the data dir's ``events.jsonl`` and as
a ``queue.requested`` event in the git audit trail (the same store ``plangate run`` uses:
``--audit-repo``, else the current repository, else ``DATA_DIR/audit.git``), with the actor,
verb, verdict, the deciding rule and the policy digest, under the run's correlation id, so
``plangate audit verify`` covers who asked to retry or cancel what.

Exit codes: those of ``plangate run`` for retry; cancel 0 done, 1 denied / nothing to cancel,
2 invalid input.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from app.actions.registry import default_registry
from app.errors import PlangateError
from app.execute.ports import JsonlEventSink
from app.execute.queue import (
    RESUMABLE,
    START_OVER,
    QueueDecision,
    Verb,
    apply_cancel,
    audit_draft,
    decide,
    prepare_retry,
)
from app.execute.state import state_store_for
from app.plan.loader import LoadedPlan, load_plan
from app.policy.loader import load_policy_dir
from app.settings import Settings

__all__ = ["RESUMABLE", "START_OVER", "register"]

# the states a retry resumes or starts over: ``app.execute.queue`` (shared with GitHub)

#: ``plangate run`` options a retry passes through unchanged
_RUN_PASSTHROUGH = (
    ("data_dir", "--data-dir"),
    ("policies", "--policies"),
    ("attestations", "--attestations"),
    ("audit_repo", "--audit-repo"),
    ("signing_key", "--signing-key"),
    ("format", "--format"),
)


def register(subparsers: argparse._SubParsersAction) -> None:
    for verb, help_text in (
        ("retry", "re-run a failed or paused run of a plan (checked against policy `queue`)"),
        ("cancel", "cancel a plan's run and release its locks (checked against policy `queue`)"),
    ):
        cmd = subparsers.add_parser(verb, help=help_text, description=help_text)
        cmd.add_argument("plan", metavar="PLAN", help="plan file")
        cmd.add_argument("--actor", metavar="LOGIN", help="who asks (default: $USER)")
        cmd.add_argument(
            "--policies",
            type=Path,
            default=Path("policies"),
            metavar="DIR",
            help="policy directory",
        )
        cmd.add_argument(
            "--data-dir", metavar="DIR", help="state directory (default PLANGATE_DATA_DIR)"
        )
        cmd.add_argument("--reason", default="", help="why (recorded in the run's reason)")
        cmd.add_argument(
            "--audit-repo",
            type=Path,
            metavar="PATH",
            help="git repository for the audit trail (default: as plangate run)",
        )
        if verb == "retry":
            cmd.add_argument("--attestations", type=Path, metavar="DIR")
            cmd.add_argument("--signing-key", type=Path, metavar="PEM")
            cmd.add_argument("--format", choices=("text", "json"), default="text")
            cmd.set_defaults(func=retry_plan)
        else:
            cmd.set_defaults(func=cancel_plan)


def _actor(args: argparse.Namespace) -> str:
    from app.cli.run import _local_user

    return args.actor or _local_user()


def _record(args: argparse.Namespace, loaded: LoadedPlan, decision: QueueDecision) -> None:
    """Queue requests (allowed or not) go to the data dir's event log, like run events, and to
    the git audit trail as ``queue.requested``."""
    event_type = f"queue.{decision.verb}.{decision.verdict}"
    sink = JsonlEventSink(_data_dir(args) / "events.jsonl", now=time.time)
    sink.emit(
        event_type,
        plan=loaded.plan.id,
        digest=loaded.digest,
        actor=decision.actor,
        rule=decision.rule,
        reason=decision.reason,
        policy_digest=decision.policy_digest,
    )
    sink.flush()
    try:
        _audit(args, loaded, decision)
    except (PlangateError, OSError, ValueError) as exc:  # events.jsonl has it; say so loudly
        print(
            f"plangate: warning: the {event_type} request is not in the git audit trail: {exc}",
            file=sys.stderr,
        )


def _audit(args: argparse.Namespace, loaded: LoadedPlan, decision: QueueDecision) -> None:
    from datetime import UTC, datetime

    from app.cli.run import _audit_store

    data_dir = _data_dir(args)
    state = state_store_for(Settings.from_env(), data_dir)
    try:
        run = state.get_run(loaded.digest)
    finally:
        state.close()
    store = _audit_store(args, data_dir)
    try:
        store.append(
            [
                audit_draft(
                    decision,
                    now=datetime.now(UTC),
                    correlation_id=run.run_id if run else None,
                    run_status=run.status if run else None,
                    note=args.reason or None,
                    via="cli",
                )
            ]
        )
        store.commit(f"{decision.verb} requested by {decision.actor}: {decision.verdict}")
    finally:
        store.close()


def _authorized(args: argparse.Namespace, verb: Verb) -> tuple[LoadedPlan, str] | None:
    """(plan, "actor (rule)") when the actor may ``verb`` the plan; prints the denying rule
    otherwise."""
    loaded = load_plan(args.plan, registry=default_registry())
    policy = load_policy_dir(args.policies)  # fail closed: no or broken policy is exit 2
    decision = decide(_actor(args), verb, loaded.plan, loaded.digest, policy)
    _record(args, loaded, decision)
    if not decision.allowed:
        for denial in decision.denials:
            print(f"plangate: denied by {denial}", file=sys.stderr)
        return None
    return loaded, decision.who()


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir) if args.data_dir else Settings.from_env().data_dir


def cancel_plan(args: argparse.Namespace) -> int:
    allowed = _authorized(args, "cancel")
    if allowed is None:
        return 1
    loaded, who = allowed
    reason = f"cancelled by {who}" + (f": {args.reason}" if args.reason else "")
    state = state_store_for(Settings.from_env(), _data_dir(args))
    try:
        outcome = apply_cancel(state, loaded.digest, reason=reason, now=time.time())
        if outcome.run_id is None:
            print(
                f"plangate: {args.plan}: no run of this plan digest ({loaded.digest}) to cancel",
                file=sys.stderr,
            )
            return 1
        if not outcome.changed:
            print(f"plangate: run {outcome.run_id} is already cancelled", file=sys.stderr)
            return 0
        state.lock_manager(now=time.time, sleep=asyncio.sleep).release(outcome.run_id)
        index = loaded.plan.step_index()
        changed = sorted(
            sid
            for sid, rec in state.completed(loaded.digest, "step").items()
            if rec.status == "succeeded" and sid in index and index[sid].mutates
        )
        undone = state.saga(loaded.digest) is not None
    finally:
        state.close()
    print(
        f"run {outcome.run_id} of {loaded.plan.id} ({outcome.status}) cancelled; its locks "
        "are released."
    )
    if changed and not undone and outcome.status != "running":
        # nothing runs it now: the next invocation undoes its changes (the saga), never more
        print(
            f"Its completed step(s) {', '.join(changed)} changed things: `plangate run "
            f"{args.plan}` undoes them (nothing goes forward); after that `--restart` starts it "
            "over."
        )
    elif outcome.status == "running":
        print(
            "If it is still running elsewhere, it stops before its next step and undoes what "
            "it changed."
        )
    else:
        print(f"`plangate run {args.plan} --restart` starts it over.")
    return 0


def retry_plan(args: argparse.Namespace) -> int:
    allowed = _authorized(args, "retry")
    if allowed is None:
        return 1
    loaded, who = allowed
    reason = f"retry requested by {who}" + (f": {args.reason}" if args.reason else "")
    state = state_store_for(Settings.from_env(), _data_dir(args))
    try:
        outcome = prepare_retry(
            state, loaded.digest, label=args.plan, reason=reason, now=time.time()
        )
    finally:
        state.close()
    print(f"plangate: {reason}: run {outcome.run_id} was '{outcome.status}'", file=sys.stderr)
    from app.cli import build_parser
    from app.cli.run import run_plan

    argv = ["run", args.plan]
    for attr, flag in _RUN_PASSTHROUGH:
        value = getattr(args, attr, None)
        if value is not None:
            argv += [flag, str(value)]
    return run_plan(build_parser().parse_args(argv))
