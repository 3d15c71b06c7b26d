"""``plangate run PLAN``: execute a plan locally, durably, resumably.

Wiring only: load the plan, open the state store under the data dir, wire the action
implementations, the approval gate, the runtime policy, the event log and the progress display,
and map the ``RunResult`` to an exit code:

0 succeeded (or ``--dry-run``) · 1 refused (no verified approval, locks busy) · 2 invalid input
· 3 the run failed (compensated, aborted, compensation_failed) · 4 paused or needs attention
(re-run the same plan to resume).

The embedded default: policy from ``--policies`` (the whole plan is judged before it starts, and
every mutating step again right before it runs), approval from a local attestation signed with
``plangate attest`` and verified against the trusted keys (``--trusted-key``, default the key
``plangate keygen`` wrote, plus the policy's ``signers``), audit events appended to the
``plangate/audit`` ref of the current git repository (or a bare repository under the data dir).
Without a verified attestation no mutating step runs; ``--unsafe-no-approval`` skips the check
and logs loudly on every use. ``--dry-run`` always works and has no side effects.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from app.actions.registry import default_registry
from app.approvals.run_attest import (
    approval_digest,
    run_attestation_path,
)
from app.audit.errors import AuditError
from app.audit.events import Actor
from app.audit.git_store import GitAuditStore
from app.audit.sink import AuditEventSink
from app.errors import InputError, PlangateError
from app.execute.incidents import FileIncidentReporter
from app.execute.metrics import MetricsSink
from app.execute.policy_port import EnginePolicy
from app.execute.ports import FanoutSink, JsonlEventSink, UnsafeNoApprovalGate
from app.execute.progress import ProgressSink, summary_table
from app.execute.result import RunResult
from app.execute.runner import FINAL, RunOptions
from app.execute.scheduler import Schedule
from app.execute.state import RunStateStore, state_store_for
from app.execute.wiring import local_locks, production_runner, run_until_signalled
from app.plan.loader import load_plan
from app.plan.model import Compensation, Plan
from app.policy.context import EvalContext
from app.policy.engine import evaluate
from app.policy.loader import PolicySet, load_policy_dir
from app.settings import Settings
from app.signing import Trust, TrustedKey
from app.signing.base import trust_from_policy
from app.signing.local_key import LocalKeySigner, load_private_key
from app.signing.local_store import DEFAULT_ATTESTATION_DIR, LocalAttestationGate, read_local

DEFAULT_KEY_PUB = Path(".plangate/keys/approval.pem.pub")
#: the local signing key (``plangate keygen``): when present, every run is attested with it
DEFAULT_SIGNING_KEY = Path(".plangate/keys/approval.pem")

__all__ = ["register"]

EXIT = {
    "succeeded": 0,
    "dry_run": 0,
    "refused": 1,
    "cancelled": 1,
    "compensated": 3,
    "aborted": 3,
    "compensation_failed": 3,
    "paused": 4,
    "needs_attention": 4,
}


def register(subparsers: argparse._SubParsersAction) -> None:
    run = subparsers.add_parser(
        "run",
        help="execute a plan locally (resumable; --dry-run prints the schedule)",
        description="Execute a plan with durable state under the data dir. Re-running the same "
        "plan resumes it: completed steps are skipped. Exit 0 succeeded, 1 refused, 2 invalid "
        "input, 3 failed (compensated/aborted/compensation_failed), 4 paused or needs attention.",
    )
    run.add_argument("plan", metavar="PLAN", help="plan file")
    run.add_argument("--dry-run", action="store_true", help="print levels and critical path only")
    run.add_argument("--max-parallel", type=int, metavar="N", help="cap on concurrent steps")
    run.add_argument(
        "--data-dir", metavar="DIR", help="state directory (default PLANGATE_DATA_DIR)"
    )
    run.add_argument(
        "--resume",
        action="store_true",
        help="require an earlier run of this exact plan digest to resume (re-runs resume anyway)",
    )
    run.add_argument(
        "--restart",
        action="store_true",
        help="forget the recorded run of this plan digest and start over (steps run again!)",
    )
    run.add_argument(
        "--mark-done",
        action="append",
        default=[],
        metavar="STEP",
        help="an interrupted step did take effect: treat it as done",
    )
    run.add_argument(
        "--retry-step",
        action="append",
        default=[],
        metavar="STEP",
        help="an interrupted step did not take effect: run it again",
    )
    run.add_argument(
        "--lock-wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait up to this long for locked resources (default: fail fast)",
    )
    run.add_argument("--format", choices=("text", "json"), default="text")
    run.add_argument(
        "--policies", type=Path, default=Path("policies"), metavar="DIR", help="policy directory"
    )
    run.add_argument(
        "--trusted-key",
        action="append",
        type=Path,
        default=[],
        metavar="PEM",
        help="trusted approval signing key (repeatable; default .plangate/keys/approval.pem.pub)",
    )
    run.add_argument(
        "--attestations",
        type=Path,
        default=None,
        metavar="DIR",
        help="where local attestations are (default .plangate/attestations)",
    )
    run.add_argument(
        "--audit-repo",
        type=Path,
        default=None,
        metavar="PATH",
        help="git repository for the audit trail (default: the current repository, else "
        "DATA_DIR/audit.git)",
    )
    run.add_argument(
        "--unsafe-no-approval",
        action="store_true",
        help="UNSAFE: run mutating steps without a verified approval (local experiments only)",
    )
    run.add_argument(
        "--signing-key",
        type=Path,
        default=None,
        metavar="PEM",
        help="key that signs the run attestation (default .plangate/keys/approval.pem if it "
        "exists; without a key the run is not attested)",
    )
    run.set_defaults(func=run_plan)


def run_plan(args: argparse.Namespace) -> int:
    loaded = load_plan(args.plan, registry=default_registry())
    if args.max_parallel is not None and args.max_parallel < 1:
        raise InputError("--max-parallel must be at least 1")
    if args.dry_run:
        schedule = Schedule.of(loaded.plan)
        if args.format == "json":
            doc = {
                "plan": loaded.plan.id,
                "digest": loaded.digest,
                "levels": schedule.levels,
                "critical_path": schedule.critical_path,
                "critical_seconds": schedule.critical_seconds,
            }
            print(json.dumps(doc, indent=2))
        else:
            print(schedule.render(loaded.plan))
            mutating = [s.id for s in loaded.plan.steps if s.mutates]
            print(f"Mutating steps (need a verified approval): {', '.join(mutating) or 'none'}")
            print(f"Digest: {loaded.digest}")
        return 0

    data_dir = Path(args.data_dir) if args.data_dir else Settings.from_env().data_dir
    policy = load_policy_dir(args.policies)  # fail closed: no or broken policy is exit 2
    decision = evaluate(
        loaded.plan,
        policy,
        EvalContext(now=datetime.now(UTC), author=_local_user(), plan_path=loaded.path),
    )
    if not decision.allowed:
        for match in decision.denials:
            step = f" step '{match.step}':" if match.step else ""
            print(
                f"plangate: denied by {match.rule} ({match.source}):{step} {match.reason}",
                file=sys.stderr,
            )
        print(f"plangate: `plangate explain {loaded.path}` shows the trace", file=sys.stderr)
        return 1
    state = state_store_for(Settings.from_env(), data_dir)  # PLANGATE_DATABASE_URL, else SQLite
    try:
        existing = state.get_run(loaded.digest)
        if args.restart and existing is not None:
            state.reset_run(loaded.digest)
        elif args.resume and existing is None:
            raise InputError(
                f"{args.plan}: no earlier run of this plan digest ({loaded.digest}) to resume",
                hint="drop --resume to start a new run; a changed plan has a new digest",
            )
        final_before = existing is not None and existing.status in FINAL and not args.restart
        gate = _gate(args, loaded, policy)
        started_at = datetime.now(UTC)
        result = _execute(args, loaded, state, data_dir, policy, gate)
        finished_at = datetime.now(UTC)
    finally:
        state.close()
    _report(args, result)
    if not final_before:  # a re-run of a finished run did nothing: its attestation stands
        _attest_run(args, loaded, result, gate, started_at, finished_at)
    return EXIT.get(result.status, 3)


def _gate(  # type: ignore[no-untyped-def]
    args: argparse.Namespace, loaded, policy: PolicySet
) -> LocalAttestationGate | UnsafeNoApprovalGate:
    if args.unsafe_no_approval:
        logging.basicConfig()
        print(
            "plangate: UNSAFE: --unsafe-no-approval: mutating steps run WITHOUT a verified "
            "approval attestation",
            file=sys.stderr,
        )
        gate = UnsafeNoApprovalGate()
    else:
        gate = LocalAttestationGate(
            plan_path=_repo_path(loaded.path),
            trust=_trust(args, policy),
            clock=lambda: datetime.now(UTC),
            directory=args.attestations or DEFAULT_ATTESTATION_DIR,
            expected_policy_digest=policy.digest,
        )
    return gate


def _attest_run(  # type: ignore[no-untyped-def]
    args: argparse.Namespace,
    loaded,
    result: RunResult,
    gate: object,
    started_at: datetime,
    finished_at: datetime,
) -> Path | None:
    """Sign what ran (``app.approvals.run_attest``) with the local key, store it beside the
    approval and record ``run.attested`` in the audit trail. Never changes the run's outcome: a
    failure to attest is reported on stderr."""
    from app.execute.run_attestation import record_attested, sign_run

    key_path = args.signing_key or DEFAULT_SIGNING_KEY
    if args.signing_key is None and not key_path.exists():
        return None
    directory = args.attestations or DEFAULT_ATTESTATION_DIR
    try:
        approval = None
        if isinstance(gate, LocalAttestationGate) and gate.last is not None:
            _, document = read_local(directory, loaded.digest, plan=loaded.path)
            approval = approval_digest(document)
        signed = sign_run(
            result,
            LocalKeySigner(load_private_key(key_path)),
            plan_path=_repo_path(loaded.path),
            started_at=started_at,
            finished_at=finished_at,
            approval=approval,
            invocation={"kind": "local", "user": _local_user()},
        )
        path = directory / run_attestation_path(loaded.digest, result.run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(signed.document)
        tmp.replace(path)
    except (PlangateError, OSError, ValueError) as exc:
        print(f"plangate: warning: the run was not attested: {exc}", file=sys.stderr)
        return None
    print(f"plangate: run attestation: {path}", file=sys.stderr)
    data_dir = Path(args.data_dir) if args.data_dir else Settings.from_env().data_dir
    try:
        store = _audit_store(args, data_dir)
        try:
            record_attested(
                store,
                signed,
                location=str(path),
                actor=Actor(kind="user", id=_local_user()),
                now=lambda: datetime.now(UTC),
                team=loaded.plan.team,
                environment=loaded.plan.environment,
            )
        finally:
            store.close()
    except (PlangateError, OSError) as exc:
        print(f"plangate: warning: run.attested not recorded in the audit: {exc}", file=sys.stderr)
    return path


def _execute(  # type: ignore[no-untyped-def]
    args: argparse.Namespace,
    loaded,
    state: RunStateStore,
    data_dir: Path,
    policy: PolicySet,
    gate: LocalAttestationGate | UnsafeNoApprovalGate,
) -> RunResult:
    from app.execute.actions import implementations  # adapters: loaded only to really run

    wired = implementations(default_registry(), base_env=dict(os.environ))
    console = Console(stderr=True)
    progress = ProgressSink(
        console, len(loaded.plan.steps), live=console.is_terminal and args.format == "text"
    )
    metrics = MetricsSink(
        team=loaded.plan.team, environment=loaded.plan.environment, now=time.monotonic
    )
    audit = AuditEventSink(
        _audit_store(args, data_dir),
        plan=loaded.plan,
        plan_digest=loaded.digest,
        actor=Actor(kind="user", id=_local_user()),
        now=lambda: datetime.now(UTC),
    )
    events = FanoutSink(
        [JsonlEventSink(data_dir / "events.jsonl", now=time.time), audit, progress, metrics]
    )
    settings = Settings.from_env()  # PLANGATE_LOCK_LEASE_SECONDS / _SKEW_SECONDS
    locks = local_locks(state, settings, shared=settings.database_url is not None)
    options = RunOptions(
        max_parallel=args.max_parallel,
        lock_wait=args.lock_wait > 0,
        lock_wait_timeout=args.lock_wait,
        resolve_interrupted={
            **{s: "done" for s in args.mark_done},
            **{s: "retry" for s in args.retry_step},
        },
    )
    runner = production_runner(
        implementations=wired.actions,
        state=state,
        locks=locks,
        gate=gate,
        policy=EnginePolicy(policy, now=lambda: datetime.now(UTC), plan_path=loaded.path),
        events=events,
        incidents=FileIncidentReporter(data_dir / "incidents"),
        options=options,
        secrets=_secrets(loaded.plan),
    )
    with progress:
        return run_until_signalled(
            runner,
            loaded,
            resume_hint="re-run the same plan to resume; completed steps are not repeated",
        )


def _local_user() -> str:
    return os.environ.get("USER") or os.environ.get("USERNAME") or "local-user"


def _repo_path(path: str) -> str:
    """The plan's path as attestations name it: relative to the repository root (cwd)."""
    try:
        return Path(path).resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return Path(path).as_posix()


def _trust(args: argparse.Namespace, policy: PolicySet) -> Trust:
    """Trusted approval signers: the executor's configured keys plus the policy's ``signers``."""
    keys: list[TrustedKey] = []
    paths = list(args.trusted_key)
    if not paths and DEFAULT_KEY_PUB.exists():
        paths = [DEFAULT_KEY_PUB]
    for path in paths:
        try:
            keys.append(TrustedKey(public_key_pem=path.read_text(), name=path.name))
        except OSError as exc:
            raise InputError(f"{path}: cannot read trusted key ({exc.strerror})") from exc
        except ValueError as exc:
            raise InputError(f"{path}: not a usable public key: {exc}") from exc
    from_policy = trust_from_policy(policy.signers)
    return Trust(keys=(*keys, *from_policy.keys), identities=from_policy.identities)


def _audit_store(args: argparse.Namespace, data_dir: Path) -> GitAuditStore:
    if args.audit_repo is not None:
        return GitAuditStore(args.audit_repo, create=True)
    try:
        return GitAuditStore(Path.cwd())
    except AuditError:
        return GitAuditStore(data_dir / "audit.git", create=True)


def _secrets(plan: Plan) -> dict[str, str]:
    """Only the secrets the plan names (``secret_env``/``secret_headers`` values), by name.

    Passing the whole environment would make every short value a "secret" to redact and hand
    actions far more than they declared.
    """
    names: set[str] = set()
    for step in plan.steps:
        sources = [step.with_]
        if isinstance(step.compensate, Compensation):
            sources.append(step.compensate.with_)
        for inputs in sources:
            for key in ("secret_env", "secret_headers"):
                value = inputs.get(key)
                if isinstance(value, dict):
                    names.update(v for v in value.values() if isinstance(v, str))
    return {name: os.environ[name] for name in sorted(names) if name in os.environ}


def _report(args: argparse.Namespace, result: RunResult) -> None:
    if args.format == "json":
        print(json.dumps(result.to_dict(), indent=2, default=str))
        return
    console = Console()
    console.print(summary_table(result))
    console.print(f"status: {result.status} — {result.reason}", markup=False, highlight=False)
    for warning in result.warnings:
        console.print(f"warning: {warning}", markup=False, highlight=False)
    if result.incident:
        console.print(f"incident: {result.incident}", markup=False)
    if result.runbook is not None:
        console.print(result.runbook.render(), markup=False, highlight=False)
