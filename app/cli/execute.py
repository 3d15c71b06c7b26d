"""``plangate execute``: what the ``plangate-execute`` Actions workflow runs after a merge.

Wiring and adapters only (decisions live in ``app.execute.github_mode``):

1. the push (``GITHUB_EVENT_PATH``: ``before``/``after``; flags override) -> the plans under
   ``plans/`` added or modified between the two commits (git, in the checkout);
2. the policy from the checkout (the default branch at the merge commit), fail closed, and the
   trust from its ``signers`` plus ``--trusted-key``;
3. per plan: the merged pull request, its attestation from the attestation branch, verification
   (PR, head SHA, plan digest in the merge commit, policy), the policy pre-check, then the same
   ``Runner`` as ``plangate run`` with GitHub issues for incidents and the audit trail on the
   checkout's ``plangate/audit`` ref;
4. the ``plangate/execute`` check run on the merge commit (in progress, then the verdict), one
   outcome comment per pull request, and ``git push`` of the audit ref (``--push-audit``).

Exit codes as ``plangate run``: 0 all plans succeeded (or nothing to do) · 1 refused · 2 invalid
input (also App credentials that are set but cannot mint a token: checked at start-up, before
anything changes) · 3 failed · 4 paused or needs attention; with several plans the worst wins.

The token is never logged and never written to ``.git/config``: the audit push authenticates
with an ``http.extraheader`` passed to the one ``git push`` process through ``GIT_CONFIG_*``
environment variables (as ``actions/checkout`` does, but in memory).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from app.errors import AttestationError, InputError, PlangateError

__all__ = ["ActionsContext", "RestExecuteGitHub", "git_diff", "register", "run_execute"]

ZERO_SHA = "0" * 40


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "execute",
        help="execute the plans a push merged (GitHub Actions; verifies approvals first)",
        description="Run the plans under plans/ that the push added or changed, each only with "
        "a verified approval attestation of its merged pull request. Reports through the "
        "plangate/execute check run and a PR comment. Exit 0 succeeded, 1 refused, 2 invalid "
        "input, 3 failed, 4 paused or needs attention.",
    )
    p.add_argument("--repo", metavar="OWNER/NAME", help="default GITHUB_REPOSITORY")
    p.add_argument("--before", metavar="SHA", help="default: the push event's before")
    p.add_argument("--after", metavar="SHA", help="default: the push event's after / GITHUB_SHA")
    p.add_argument("--policies", type=Path, default=Path("policies"), metavar="DIR")
    p.add_argument("--data-dir", metavar="DIR", help="state directory (default PLANGATE_DATA_DIR)")
    p.add_argument(
        "--trusted-key",
        action="append",
        type=Path,
        default=[],
        metavar="PEM",
        help="trusted approval signing key, in addition to the policy's signers (repeatable)",
    )
    p.add_argument("--attestation-branch", default="plangate-attestations", metavar="BRANCH")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="verify and report what would run; run nothing, write nothing to GitHub",
    )
    p.add_argument(
        "--push-audit",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="push the plangate/audit ref at the end (default: yes)",
    )
    p.add_argument(
        "--locks",
        choices=("github", "local"),
        default="github",
        help="where resource locks live: git refs refs/plangate/locks/* in the repository, shared "
        "by every runner (default), or the runner's own SQLite file (one runner only)",
    )
    p.add_argument(
        "--lock-wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait up to this long for resources another run holds (default: fail fast)",
    )
    p.add_argument(
        "--attest-run",
        choices=("auto", "key", "sigstore", "off"),
        default="auto",
        help="sign what ran: 'key' with --signing-key / PLANGATE_SIGNING_KEY_PATH, 'sigstore' "
        "keyless with the job's OIDC identity (needs id-token: write); 'auto' picks the key if "
        "one is configured, else sigstore if the job can get an OIDC token, else none",
    )
    p.add_argument("--signing-key", type=Path, default=None, metavar="PEM")
    p.add_argument(
        "--resume",
        action="store_true",
        help="require earlier run state (local, carried or PostgreSQL) and continue from it; "
        "without it, refuse instead of starting over (re-runs resume anyway)",
    )
    p.add_argument(
        "--carry-state",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep the run state between workflow runs: a signed copy on the attestation "
        "branch, restored on a fresh runner (default: yes, unless PLANGATE_DATABASE_URL is set)",
    )
    p.add_argument(
        "--queue-request",
        metavar="ID",
        help="run a retry (or the cancel of a run no workflow is running) the Plangate App "
        "recorded (workflow_dispatch from the check run's Retry/Cancel button): the request must "
        "be on the attestation branch, allowed by policy, unused, for a merge commit on the "
        "default branch; the checkout must be the default branch",
    )
    p.add_argument(
        "--unsafe-unsigned-queue-requests",
        action="store_true",
        help="accept queue requests the App did not sign (an App without a signing key, e.g. "
        "keyless approvals): the attestation branch's ruleset is then the only proof the App "
        "wrote them; logged on every use",
    )
    p.add_argument(
        "--queue-buttons",
        choices=("auto", "on", "off"),
        default="off",
        help="Retry/Cancel buttons on the plangate/execute check run; GitHub sends the button "
        "press only to the App that created the check run, so 'auto' adds them (and creates the "
        "check run with an App token limited to checks: write) when the App's credentials are "
        "set (GITHUB_APP_ID, GITHUB_PRIVATE_KEY); 'on' adds them whoever creates the check run "
        "(default: off; the workflow passes auto)",
    )
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=run_execute)


# --- the Actions environment ------------------------------------------------------------------


@dataclass(frozen=True)
class ActionsContext:
    repo: str
    before: str
    after: str
    token: str | None
    api_url: str
    server_url: str
    run_url: str | None
    workflow: str = "plangate-execute"
    #: GitHub's immutable repository id from the push event (binds attestations across renames)
    repo_id: int | None = None
    default_branch: str = "main"
    #: the App's credentials (``GITHUB_APP_ID`` + private key): each run then gets its own
    #: installation token scoped to what its plan declares
    app_id: int | None = None
    app_private_key: str | None = field(default=None, repr=False)
    #: resource-lock lease and clock-skew allowance (PLANGATE_LOCK_LEASE_SECONDS / _SKEW_)
    lock_lease: float = 300.0
    lock_skew: float = 30.0


def _actions_context(args: argparse.Namespace, environ: Mapping[str, str]) -> ActionsContext:
    from app.settings import Settings

    settings = Settings.from_env(environ)
    event: dict[str, Any] = {}
    event_path = environ.get("GITHUB_EVENT_PATH")
    if event_path:
        try:
            event = json.loads(Path(event_path).read_text())
        except (OSError, ValueError) as exc:
            raise InputError(
                f"GITHUB_EVENT_PATH={event_path}: cannot read the event ({exc})"
            ) from exc
    repo = args.repo or environ.get("GITHUB_REPOSITORY") or ""
    if "/" not in repo:
        raise InputError("no repository: pass --repo OWNER/NAME or set GITHUB_REPOSITORY")
    after = args.after or event.get("after") or environ.get("GITHUB_SHA") or ""
    before = args.before or event.get("before") or ""
    if not after or not before:
        raise InputError(
            "no commit range: pass --before and --after, or run on a push event (GITHUB_EVENT_PATH)"
        )
    server = (environ.get("GITHUB_SERVER_URL") or "https://github.com").rstrip("/")
    run_id = environ.get("GITHUB_RUN_ID")
    token = settings.github_token.get_secret_value() if settings.github_token else None
    return ActionsContext(
        repo=repo,
        before=before,
        after=after,
        token=token,
        api_url=settings.github_api_url,
        server_url=server,
        run_url=f"{server}/{repo}/actions/runs/{run_id}" if run_id else None,
        workflow=environ.get("GITHUB_WORKFLOW_REF") or "plangate-execute",
        repo_id=_repo_id(event, repo),
        default_branch=str((event.get("repository") or {}).get("default_branch") or "main"),
        app_id=settings.github_app_id,
        app_private_key=(
            settings.github_private_key.get_secret_value() if settings.github_private_key else None
        ),
        lock_lease=settings.lock_lease_seconds,
        lock_skew=settings.lock_skew_seconds,
    )


def _repo_id(event: Mapping[str, Any], repo: str) -> int | None:
    """The event's ``repository.id``, only if the event is about ``repo``."""
    info = event.get("repository")
    if not isinstance(info, Mapping) or str(info.get("full_name", "")).lower() != repo.lower():
        return None
    value = info.get("id")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# --- adapters ---------------------------------------------------------------------------------


class RestExecuteGitHub:
    """``ExecuteGitHub`` + check runs, comments and issues over ``RepoClient``'s transport."""

    def __init__(self, client: Any) -> None:
        self.client = client
        owner, _, name = client.full_name.partition("/")
        self._base = f"/repos/{quote(owner)}/{quote(name)}"

    def pulls_for_commit(self, sha: str) -> list[Mapping[str, Any]]:
        return list(self.client.transport.paginate(f"{self._base}/commits/{sha}/pulls"))

    def file_at(self, path: str, ref: str) -> bytes | None:
        return self.client.file_at(path, ref)

    def create_check_run(self, body: Mapping[str, Any]) -> int:
        return int(self.client.create_check_run(body))

    def update_check_run(self, check_run_id: int, body: Mapping[str, Any]) -> None:
        self.client.update_check_run(check_run_id, body)

    def update_check_run_batches(
        self,
        check_run_id: int,
        bodies: Sequence[Mapping[str, Any]],
        *,
        present: Sequence[Mapping[str, Any]] | None,
    ) -> None:
        """Updates whose annotations land once, even after an applied-but-unconfirmed 5xx."""
        self.client.update_check_run_batches(check_run_id, bodies, present=present)

    def comment(self, number: int, body: str) -> None:
        self.client.transport.request(
            "POST", f"{self._base}/issues/{number}/comments", body={"body": body}
        )

    def open_issue(self, repo: str, title: str, body: str, labels: Sequence[str]) -> str:
        """``IssueOpener`` for ``GitHubIssueIncidents`` (incidents as issues in this repo)."""
        data = self.client.transport.request(
            "POST",
            f"{self._base}/issues",
            body={"title": title[:256], "body": body, "labels": list(labels)},
        ).data
        return str((data or {}).get("html_url") or f"issue #{(data or {}).get('number')}")


def git_diff(repo_path: Path, before: str, after: str) -> list[tuple[str, str]]:
    """``(status, path)`` of files changed from ``before`` to ``after`` (renames split in two).

    A zero ``before`` (a new branch) diffs against ``after``'s first parent; a root commit
    counts every file as added.
    """
    import git

    repo = git.Repo(repo_path, search_parent_directories=True)
    try:
        new = repo.commit(after)
        if before == ZERO_SHA:
            if not new.parents:
                return [("A", str(b.path)) for b in new.tree.traverse() if b.type == "blob"]
            old = new.parents[0]
        else:
            old = repo.commit(before)
    except (ValueError, git.BadName) as exc:
        raise InputError(
            f"commit range {before[:12]}..{after[:12]} is not in the checkout ({exc})",
            hint="check out with fetch-depth: 0 so both commits of the push are present",
        ) from exc
    out: list[tuple[str, str]] = []
    for d in old.diff(new):
        kind = d.change_type or "M"
        if kind == "R":
            out += [("D", str(d.a_path)), ("A", str(d.b_path))]
        elif kind == "D":
            out.append(("D", str(d.a_path)))
        else:
            out.append((kind, str(d.b_path)))
    return out


def _require_checkout_at(repo_path: Path, after: str) -> None:
    """Policy and audit come from the checkout, so it must be the merge commit (fail closed)."""
    import git

    try:
        head = git.Repo(repo_path, search_parent_directories=True).head.commit.hexsha
    except (git.InvalidGitRepositoryError, git.NoSuchPathError, ValueError) as exc:
        raise InputError(
            f"{repo_path}: not a git checkout",
            hint="run plangate execute at the root of the checked-out repository",
        ) from exc
    if head != after:
        raise InputError(
            f"the checkout is at {head[:12]}, not at the pushed commit {after[:12]}: the policy "
            "would not be the one in force at the merge",
            hint="check out the pushed commit (actions/checkout does by default)",
        )


def git_file(repo_path: Path, commit: str, path: str) -> bytes:
    import git

    repo = git.Repo(repo_path, search_parent_directories=True)
    try:
        return repo.commit(commit).tree[path].data_stream.read()
    except KeyError as exc:
        raise InputError(f"{path}: not in commit {commit[:12]}") from exc


def authenticated_push(store: Any, *, server_url: str, repo: str, token: str | None) -> str | None:
    """Push the audit ref to ``server_url/repo`` with the token in memory only.

    The remote and its ``Authorization`` header reach the one git process through
    ``GIT_CONFIG_COUNT``/``KEY``/``VALUE`` environment variables: nothing on disk, nothing on a
    command line (``ps``), nothing in git's error messages (the remote is named, not a URL).
    """
    remote = "plangate-audit-push"
    url = f"{server_url.rstrip('/')}/{repo}.git"
    config = [(f"remote.{remote}.url", url)]
    if token:
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        parts = urlsplit(url)
        config.append(
            (f"http.{parts.scheme}://{parts.netloc}/.extraheader", f"AUTHORIZATION: basic {basic}")
        )
    env = {"GIT_CONFIG_COUNT": str(len(config)), "GIT_TERMINAL_PROMPT": "0"}
    for i, (key, value) in enumerate(config):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    with store._repo.git.custom_environment(**env):
        return store.push(remote)


# --- the command ------------------------------------------------------------------------------


def run_execute(args: argparse.Namespace) -> int:
    return execute(args, environ=os.environ)


def execute(
    args: argparse.Namespace,
    *,
    environ: Mapping[str, str],
    github: Any | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    run_signer: RunSigning | None = None,
) -> int:
    """``run_signer`` (tests): signs run attestations instead of ``--attest-run``."""
    opened: list[Any] = []  # holders of App tokens: revoked however execute ends
    try:
        return _execute(
            args, environ=environ, github=github, now=now, run_signer=run_signer, opened=opened
        )
    finally:
        for holder in opened:
            holder.close()


def _execute(  # type: ignore[no-untyped-def]
    args: argparse.Namespace,
    *,
    environ: Mapping[str, str],
    github,
    now: Callable[[], datetime],
    run_signer: RunSigning | None,
    opened: list[Any],
) -> int:
    from app.execute import github_mode as gm
    from app.policy.loader import load_policy_dir

    queued: QueuedRetry | None = None
    if args.queue_request:
        args.before = args.before or ZERO_SHA  # a dispatch has no push range: the request has it
    ctx = _actions_context(args, environ)
    checkout = Path.cwd()
    _require_checkout_at(checkout, ctx.after)
    writes: _AttestationWrites | None = None
    if args.queue_request:
        if github is None:
            github = _github(ctx)
        writes = _AttestationWrites(github, ctx)
        opened.append(writes)
        if not args.dry_run:  # it marks the request used: broken App credentials fail first
            writes.open()
        try:
            queued = _queued_retry(args, ctx, github, environ, now(), writes=writes)
        except (AttestationError, InputError) as exc:
            print(f"plangate: queue request refused: {exc.diagnostics()}", file=sys.stderr)
            writes.close()
            return 1
        ctx = queued.ctx
        diff = gm.ChangedPlans(changed=tuple(p.path for p in queued.request.plans))
    else:
        diff = gm.changed_plans(git_diff(checkout, ctx.before, ctx.after))
    if not diff.changed:
        what = f"; deleted (not run): {', '.join(diff.deleted)}" if diff.deleted else ""
        print(f"plangate: no plan added or changed in {ctx.before[:12]}..{ctx.after[:12]}{what}")
        return 0
    policy = load_policy_dir(args.policies)  # fail closed: a broken policy is exit 2
    trust = _trust(args, policy)
    if run_signer is None and not args.dry_run:  # misconfigured signing fails before anything runs
        run_signer = _run_signer_factory(args, environ, ctx)
    if github is None:
        github = _github(ctx)
    if writes is None:
        writes = _AttestationWrites(github, ctx)
        opened.append(writes)
    data_dir = Path(args.data_dir) if args.data_dir else _data_dir(environ)
    carry = not args.dry_run and args.carry_state and _carries_state(environ)
    if run_signer is not None:  # it signs what the branch stores (run attestation, state)
        writes.open()  # broken App credentials fail here, before anything changes (exit 2)

    buttons = _queue_buttons(args, ctx)
    if buttons and args.queue_buttons == "auto" and not args.dry_run:
        github = _AppCheckRuns(github, ctx)  # so the button presses reach the App
        opened.append(github)  # its checks: write token is revoked when execute ends
    check_id: int | None = None
    if not args.dry_run:
        check_id = github.create_check_run(
            {
                "name": gm.CHECK_NAME,
                "head_sha": ctx.after,
                "status": "in_progress",
                "started_at": now().strftime("%Y-%m-%dT%H:%M:%SZ"),
                **({"details_url": ctx.run_url} if ctx.run_url else {}),
                "output": {
                    "title": f"Executing {len(diff.changed)} plan(s)",
                    "summary": "Plans: " + ", ".join(f"`{p}`" for p in diff.changed),
                },
            }
        )
    outcomes: list[gm.PlanOutcome] = []
    notes: list[str] = []
    if queued is not None:  # say on the check run who asked, and under which rule
        r = queued.request
        rules = ", ".join(sorted({d.rule or "queue" for d in queued.decisions}))
        notes += [
            f"{r.verb.capitalize()} requested by @{r.actor} on the plangate/execute check run "
            f"({rules}; queue request `{r.id}`).",
            "",
        ]
    error: str | None = None
    if not args.dry_run and (carry or run_signer is not None):
        notes += writes.missing_credentials_note(args.attestation_branch)
    state_refused: str | None = None
    try:
        if carry:
            try:
                notes += _restore_state(args, ctx, github, data_dir, run_signer)
            except AttestationError as exc:
                print(f"plangate: carried state refused: {exc.diagnostics()}", file=sys.stderr)
                state_refused = f"carried run state refused ({exc.check} check): {exc}. {exc.hint}"
                notes += [f"**Carried state refused** ({exc.check} check): {exc}", ""]
        if (
            args.resume
            and state_refused is None
            and _carries_state(environ)
            and not (data_dir / "state.db").exists()
        ):
            state_refused = (
                "--resume: no earlier run state to resume (none local, none carried on "
                f"{args.attestation_branch}:state/state.sqlite.gz)"
            )
        pulls: list[Any] | None = None
        cancels = (
            None
            if args.dry_run
            else _CancelRequests(
                github,
                args.attestation_branch,
                trust,
                unsafe=args.unsafe_unsigned_queue_requests,
            )
        )
        retry_refused: dict[str, str] = {}
        if queued is not None and state_refused is None:
            retry_refused = _prepare_queued(queued, ctx, data_dir, cancels)
        for path in diff.changed:
            if state_refused is not None:  # fail closed: nothing runs on untrusted state
                outcomes.append(gm.PlanOutcome(path=path, refusal=state_refused))
                continue
            if path in retry_refused:
                outcomes.append(gm.PlanOutcome(path=path, refusal=retry_refused[path]))
                continue
            if pulls is None:
                pulls = github.pulls_for_commit(ctx.after)
            outcomes.append(
                _one_plan(
                    args,
                    ctx,
                    github,
                    path,
                    policy,
                    trust,
                    data_dir,
                    now,
                    pulls,
                    check_id,
                    run_signer,
                    cancels=cancels,
                    buttons=buttons,
                    writes=writes,
                )
            )
        if carry and any(o.result is not None for o in outcomes):
            notes += _save_state(args, ctx, github, data_dir, run_signer, writes)
        if args.push_audit and not args.dry_run:
            notes += _push_audit(ctx)
    except BaseException as exc:  # the check run must not stay "in progress" or say success
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        if not args.dry_run:
            _write_metrics(data_dir)
        if check_id is not None:
            try:
                _finish_check(
                    github,
                    check_id,
                    ctx,
                    outcomes,
                    diff.deleted,
                    notes,
                    error,
                    buttons=buttons,
                    unrecorded=writes.failures,
                )
            except PlangateError as exc:  # never mask the run's own outcome or error
                print(
                    f"plangate: cannot complete the {gm.CHECK_NAME} check run: {exc}",
                    file=sys.stderr,
                )
        writes.close()
    if not args.dry_run:
        _comment(github, ctx, outcomes)
    for failure in writes.failures:  # the job log too: the check run is not the only reader
        _warn(failure, environ)
    _print(args, outcomes, diff.deleted, notes)
    return gm.exit_code(outcomes)


def _one_plan(  # type: ignore[no-untyped-def]
    args,
    ctx: ActionsContext,
    github,
    path: str,
    policy,
    trust,
    data_dir: Path,
    now,
    pulls,
    check_id,
    run_signer=None,
    *,
    cancels=None,
    buttons: bool = False,
    writes: _AttestationWrites | None = None,
):
    from app.actions.registry import default_registry
    from app.execute import github_mode as gm
    from app.plan.loader import load_plan_bytes
    from app.policy.context import EvalContext
    from app.policy.engine import evaluate

    outcome = gm.PlanOutcome(path=path)
    try:
        loaded = load_plan_bytes(
            path, git_file(Path.cwd(), ctx.after, path), registry=default_registry()
        )
    except PlangateError as exc:
        outcome.refusal = f"invalid plan: {exc}"
        outcome.invalid = True
        return outcome
    outcome.step_lines = {
        step.id: loaded.line_of("steps", i) or 1 for i, step in enumerate(loaded.plan.steps)
    }
    from app.execute.github_access import token_scope

    try:  # the steps must stay inside the GitHub access the plan declares (before anything runs)
        scope = token_scope(loaded.plan, path=path, line_of=lambda i: loaded.line_of("steps", i))
    except InputError as exc:
        outcome.refusal = f"invalid plan: {exc.message}"
        outcome.invalid = True
        return outcome
    try:
        pr = gm.merged_pull(pulls, ctx.after)
        outcome.pr = pr
        source, document = gm.fetch_attestation(github, args.attestation_branch, pr)

        def verify():  # type: ignore[no-untyped-def]
            return gm.verify_plan(
                plan=loaded.plan,
                plan_path=path,
                plan_digest=loaded.digest,
                document=document,
                source=source,
                trust=trust,
                repo=ctx.repo,
                repo_id=ctx.repo_id,
                pr=pr,
                policy=policy,
                now=now(),
            )

        outcome.approval = verify()
    except AttestationError as exc:
        outcome.refusal = f"{exc} ({exc.check} check). {exc.hint or ''}".strip()
        return outcome
    decision = evaluate(
        loaded.plan, policy, EvalContext(now=now(), author=pr.author, plan_path=path)
    )
    if not decision.allowed:
        outcome.refusal = "denied by policy: " + "; ".join(
            f"{m.rule} ({m.source}): {m.reason}" for m in decision.denials
        )
        return outcome
    if args.dry_run:
        return outcome
    scoped = None
    if scope is not None:
        try:
            scoped = _mint_run_token(ctx, scope)
        except PlangateError as exc:
            outcome.refusal = f"no GitHub token for the run's declared scope: {exc}"
            return outcome
        if scoped is None:
            outcome.warnings.append(
                "the plan uses GitHub but no App credentials are configured (GITHUB_APP_ID, "
                "GITHUB_PRIVATE_KEY): its github.* steps get no token"
            )
    progress = None
    if check_id is not None:
        progress = gm.CheckRunProgress(
            lambda body: github.update_check_run(check_id, body),
            plan_path=path,
            clock=time.monotonic,
            run_url=ctx.run_url,
            buttons=buttons,
            external_id=_external_id([(path, loaded.digest)]),
        )
    gate = gm.VerifiedPlanGate(verify)
    started_at = datetime.now(UTC)
    try:
        outcome.result = _run(
            args, ctx, github, loaded, policy, data_dir, pr, gate, progress, scoped, cancels
        )
    finally:
        if scoped is not None:
            _revoke(ctx, scoped, outcome)
    finished_at = datetime.now(UTC)
    if run_signer is not None:
        _attest_run(
            args,
            ctx,
            github,
            loaded,
            outcome,
            document if gate.last else None,
            run_signer,
            started_at,
            finished_at,
            writes or _AttestationWrites(github, ctx),
        )
    if progress is not None and progress.errors:
        outcome.warnings.append(f"live check-run updates failed: {progress.errors[-1]}")
    return outcome


def _run(
    args, ctx, github, loaded, policy, data_dir: Path, pr, gate, progress, scoped=None, cancels=None
):  # type: ignore[no-untyped-def]
    from app.actions.registry import default_registry
    from app.audit.events import Actor
    from app.audit.git_store import GitAuditStore
    from app.audit.sink import AuditEventSink
    from app.execute.actions import implementations
    from app.execute.incidents import FileIncidentReporter, GitHubIssueIncidents
    from app.execute.metrics import MetricsSink
    from app.execute.policy_port import EnginePolicy
    from app.execute.ports import FanoutSink, JsonlEventSink
    from app.execute.runner import RunOptions
    from app.execute.state import state_store_for
    from app.execute.wiring import production_runner, run_until_signalled
    from app.settings import Settings

    clock = lambda: datetime.now(UTC)  # noqa: E731
    # PLANGATE_DATABASE_URL: a PostgreSQL store every runner shares; else SQLite under data_dir
    state = state_store_for(Settings.from_env(), data_dir)
    store = GitAuditStore(Path.cwd())
    try:
        audit = AuditEventSink(
            store,
            plan=loaded.plan,
            plan_digest=loaded.digest,
            actor=Actor(kind="workflow", id=ctx.workflow),
            now=clock,
        )
        metrics = MetricsSink(
            team=loaded.plan.team, environment=loaded.plan.environment, now=time.monotonic
        )
        sinks = [JsonlEventSink(data_dir / "events.jsonl", now=time.time), audit, metrics]
        events = FanoutSink([*sinks, progress] if progress is not None else sinks)
        wired = implementations(default_registry(), base_env=_step_env())
        runner = production_runner(
            implementations=wired.actions,
            state=state,
            gate=gate,
            policy=EnginePolicy(policy, now=clock, plan_path=loaded.path, author=pr.author),
            events=events,
            incidents=GitHubIssueIncidents(
                github,
                repo=ctx.repo,
                fallback=FileIncidentReporter(data_dir / "incidents"),
            ),
            secrets=_run_secrets(loaded.plan, scoped),
            locks=_locks(args, ctx, github, state),
            options=RunOptions(lock_wait=args.lock_wait > 0, lock_wait_timeout=args.lock_wait),
            cancel_requested=cancels,
        )
        # a cancelled workflow sends SIGTERM: the check run then completes as failure
        return run_until_signalled(
            runner,
            loaded,
            resume_hint="re-run the workflow to resume; completed steps are not repeated",
        )
    finally:
        store.commit()
        store.close()
        state.close()


# --- queue requests from the App (Retry / Cancel buttons) ----------------------------------


@dataclass(frozen=True)
class QueuedRetry:
    """A retry the App recorded, checked; ``ctx`` is re-pointed at the request's merge commit."""

    request: Any
    ctx: ActionsContext
    decisions: tuple[Any, ...]


def _queued_retry(  # type: ignore[no-untyped-def]
    args, ctx: ActionsContext, github, environ: Mapping[str, str], now: datetime, *, writes
) -> QueuedRetry:
    """Fail closed unless the App recorded an allowed retry for this repository (the record on
    the bot-only attestation branch is the proof: anyone with write access can dispatch the
    workflow), for a merge commit on the default branch, still allowed by the default branch's
    policy (the checkout), and not used before. Marks it used before anything runs."""
    import dataclasses

    from app.actions.registry import default_registry
    from app.execute.queue import decide, request_path
    from app.github.attestations import AttestationStore
    from app.plan.loader import load_plan_bytes
    from app.policy.loader import load_policy_dir

    ref = environ.get("GITHUB_REF", f"refs/heads/{ctx.default_branch}")
    if ref != f"refs/heads/{ctx.default_branch}":
        raise AttestationError(
            f"a queued retry runs only from the default branch ({ctx.default_branch}), not {ref}",
            check="queue-request",
            hint="dispatch plangate-execute.yml on the default branch (the App does)",
        )
    path = request_path(args.queue_request)
    store = AttestationStore(github.client, branch=args.attestation_branch)
    head = store.head()
    raw = store.read(path, at=head) if head else None
    if raw is None:
        raise AttestationError(
            f"no queue request {args.queue_request} on {args.attestation_branch} ({path})",
            check="queue-request",
            hint="only the Plangate App records retries (the Retry button on the "
            "plangate/execute check run); a bare workflow_dispatch runs nothing",
        )
    source = f"{args.attestation_branch}:{path}"
    policy = load_policy_dir(args.policies)  # the default branch's policy, now
    request = queue_document(
        raw, source, _trust(args, policy), unsafe=args.unsafe_unsigned_queue_requests
    )
    verb = "cancel" if args.queue_request.startswith("cancel-") else "retry"
    request.check_for_execution(
        request_id=args.queue_request, repository=ctx.repo, verb=verb, now=now
    )
    if store.read(path + ".used", at=head) is not None:
        raise AttestationError(
            f"queue request {args.queue_request} was already used",
            check="queue-request",
            hint="press the button again for a new request",
        )
    _require_on_default_branch(Path.cwd(), request.commit, ctx.after)
    decisions = []
    for plan in request.plans:
        loaded = load_plan_bytes(
            plan.path, git_file(Path.cwd(), request.commit, plan.path), registry=default_registry()
        )
        if loaded.digest != plan.digest:
            raise AttestationError(
                f"{plan.path} at {request.commit[:12]} has digest {loaded.digest}, the request "
                f"names {plan.digest}",
                check="queue-request",
            )
        decision = decide(request.actor, verb, loaded.plan, loaded.digest, policy)
        if not decision.allowed:
            raise AttestationError(
                f"the default branch's policy no longer lets {request.actor} {verb} {plan.path}: "
                + "; ".join(decision.denials),
                check="policy",
            )
        decisions.append(decision)
    used = {"used_by": ctx.run_url or ctx.workflow, "at": now.isoformat()}
    writes.store(args.attestation_branch).store(  # the App's token: an App-only branch
        path + ".used",
        (json.dumps(used, sort_keys=True) + "\n").encode(),
        message=f"plangate: queue request {args.queue_request} used",
    )
    return QueuedRetry(
        request=request,
        ctx=dataclasses.replace(ctx, before=ZERO_SHA, after=request.commit),
        decisions=tuple(decisions),
    )


def queue_document(raw: bytes, source: str, trust: Any, *, unsafe: bool = False) -> Any:
    """A ``QueueRequest`` from its stored bytes: a DSSE envelope (or sigstore bundle) signed by
    a trusted signer (the App's key in the policy's ``signers``), or, only with ``unsafe``,
    plain JSON. Raises ``AttestationError`` otherwise (fail closed)."""
    from app.execute.queue import REQUEST_PAYLOAD_TYPE, QueueRequest
    from app.signing import verify_signed_document

    if b'"payloadType"' in raw or b'"mediaType"' in raw:
        signed = verify_signed_document(raw, trust, source=source)
        if signed.payload_type != REQUEST_PAYLOAD_TYPE:
            raise AttestationError(
                f"{source}: signed payload is {signed.payload_type!r}, not a queue request",
                check="format",
            )
        return QueueRequest.from_json(signed.payload, source=source)
    if not unsafe:
        raise AttestationError(
            f"{source}: the queue request is not signed",
            check="signer",
            hint="start the App with PLANGATE_SIGNING_KEY_PATH (its key listed in the policy's "
            "signers); an App without a key needs --unsafe-unsigned-queue-requests, which "
            "trusts the attestation branch's ruleset alone",
        )
    print(
        f"plangate: warning: {source}: accepting an unsigned queue request "
        "(--unsafe-unsigned-queue-requests)",
        file=sys.stderr,
    )
    return QueueRequest.from_json(raw, source=source)


def _require_on_default_branch(repo_path: Path, commit: str, tip: str) -> None:
    import git

    repo = git.Repo(repo_path, search_parent_directories=True)
    try:
        repo.git.merge_base("--is-ancestor", commit, tip)
    except git.GitCommandError as exc:
        raise AttestationError(
            f"commit {commit[:12]} is not on the default branch (not an ancestor of {tip[:12]})",
            check="queue-request",
            hint="only merged plans are retried",
        ) from exc


def _prepare_queued(
    queued: QueuedRetry, ctx: ActionsContext, data_dir: Path, cancels
) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Put each requested plan's run where a re-run retries it (``prepare_retry``, as
    ``plangate retry``) and record the request in the audit trail. Returns refusals by path."""
    from app.audit.git_store import GitAuditStore
    from app.execute.queue import apply_cancel, prepare_retry
    from app.execute.state import state_store_for
    from app.settings import Settings

    refused: dict[str, str] = {}
    request = queued.request
    state = state_store_for(Settings.from_env(), data_dir)
    audit = GitAuditStore(Path.cwd())
    try:
        for plan, decision in zip(request.plans, queued.decisions, strict=True):
            if request.verb == "cancel":  # no workflow was running it: cancel, then undo
                run = state.get_run(plan.digest)
                reason = f"cancelled by {decision.who()} on the plangate/execute check run"
                _append_queue_audit(audit, decision, run, request)
                if apply_cancel(state, plan.digest, reason=reason, now=time.time()).run_id is None:
                    refused[plan.path] = f"cancel: no run of {plan.path} ({plan.digest}) to cancel"
                continue
            reason = f"retry requested by {decision.who()} on the plangate/execute check run"
            if cancels is not None:  # a cancel recorded since wins over the retry
                cancelled = cancels(plan.digest)
                if cancelled and state.get_run(plan.digest) is not None:
                    state.cancel_run(plan.digest, cancelled, time.time())
            run = state.get_run(plan.digest)
            _append_queue_audit(audit, decision, run, request)
            try:
                prepare_retry(state, plan.digest, label=plan.path, reason=reason, now=time.time())
            except InputError as exc:
                refused[plan.path] = f"retry refused: {exc.message}. {exc.hint or ''}".strip()
        audit.commit(f"{request.verb} requested by {request.actor} (queue request {request.id})")
    finally:
        audit.close()
        state.close()
    return refused


def _append_queue_audit(audit: Any, decision: Any, run: Any, request: Any) -> None:
    from app.execute.queue import audit_draft

    audit.append(
        [
            audit_draft(
                decision,
                now=datetime.now(UTC),
                correlation_id=run.run_id if run else None,
                run_status=run.status if run else None,
                via=f"github:check_run/{request.check_run_id}",
            )
        ]
    )


class _CancelRequests:
    """``Runner.cancel_requested``: an allowed cancel the App recorded for a digest
    (``queue/cancel/<digest>.json`` on the attestation branch). Read at most every
    ``interval`` seconds (one request per step otherwise); a hit is remembered."""

    def __init__(
        self,
        github: Any,
        branch: str,
        trust: Any,
        *,
        unsafe: bool = False,
        interval: float = 5.0,
    ) -> None:
        self.github = github
        self.branch = branch
        self.trust = trust
        self.unsafe = unsafe
        self.interval = interval
        self._checked: dict[str, float] = {}
        self._found: dict[str, str] = {}

    def __call__(self, digest: str) -> str | None:
        from app.execute.queue import cancel_path
        from app.github.attestations import AttestationStore

        if digest in self._found:
            return self._found[digest]
        now = time.monotonic()
        last = self._checked.get(digest)
        if last is not None and now - last < self.interval:
            return None
        self._checked[digest] = now
        path = cancel_path(digest)
        raw = AttestationStore(self.github.client, branch=self.branch).read(path)
        if raw is None:
            return None
        try:  # a record that does not verify is not a cancel (and is said so, once)
            request = queue_document(raw, f"{self.branch}:{path}", self.trust, unsafe=self.unsafe)
        except (AttestationError, InputError) as exc:
            print(f"plangate: ignoring cancel record: {exc}", file=sys.stderr)
            return None
        if request.verdict != "allow" or request.verb != "cancel":
            return None
        rule = request.rules[0] if request.rules else "queue"
        self._found[digest] = (
            f"cancelled by {request.actor} ({rule}) on the plangate/execute check run"
        )
        return self._found[digest]


class _AppCheckRuns:
    """The executor's GitHub, except that the ``plangate/execute`` check run is created and
    updated with an App installation token limited to ``checks: write``: GitHub delivers
    ``check_run.requested_action`` (the Retry/Cancel buttons) only to the App that created the
    check run. The token is minted on first use, replaced when less than 5 minutes are left
    of the lifetime GitHub gave it (its ``expires_at``; the old one revoked), and revoked by
    ``close`` when ``plangate execute`` ends."""

    def __init__(
        self, github: Any, ctx: ActionsContext, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._github = github
        self._ctx = ctx
        self._clock = clock
        self._checks: RestExecuteGitHub | None = None
        self._token: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._github, name)

    def _client(self) -> RestExecuteGitHub:
        if self._token is None or self._clock() > self._token.expires_at - 300:
            from app.github.auth import (
                AppCredentials,
                InstallationTokens,
                repo_installation,
                token_transport,
            )
            from app.github.client import GitHubCache, RepoClient

            ctx = self._ctx
            tokens = InstallationTokens(
                AppCredentials(
                    app_id=int(ctx.app_id or 0),
                    private_key=ctx.app_private_key or "",
                    base_url=ctx.api_url,
                )
            )
            name = ctx.repo.partition("/")[2]
            old = self._token
            self._token = tokens.scoped_token(
                repo_installation(tokens, ctx.repo),
                repositories=(name,),
                permissions={"checks": "write"},
            )
            transport = token_transport(self._token.token, base_url=ctx.api_url)
            self._checks = RestExecuteGitHub(RepoClient(transport, ctx.repo, cache=GitHubCache()))
            if old is not None:
                self._revoke(old)
        assert self._checks is not None
        return self._checks

    def close(self) -> None:
        """Revoke the ``checks: write`` token (best effort: it expires within the hour)."""
        token, self._token, self._checks = self._token, None, None
        if token is not None:
            self._revoke(token)

    def _revoke(self, token: Any) -> None:
        from app.github.auth import revoke_token

        try:
            revoke_token(token.token, base_url=self._ctx.api_url)
        except PlangateError as exc:
            print(f"plangate: the check-run token was not revoked: {exc}", file=sys.stderr)

    def create_check_run(self, body: Mapping[str, Any]) -> int:
        return self._client().create_check_run(body)

    def update_check_run(self, check_run_id: int, body: Mapping[str, Any]) -> None:
        self._client().update_check_run(check_run_id, body)

    def update_check_run_batches(
        self,
        check_run_id: int,
        bodies: Sequence[Mapping[str, Any]],
        *,
        present: Sequence[Mapping[str, Any]] | None,
    ) -> None:
        self._client().update_check_run_batches(check_run_id, bodies, present=present)


def _queue_buttons(args: argparse.Namespace, ctx: ActionsContext) -> bool:
    """Retry/Cancel buttons: GitHub sends ``requested_action`` only to the App that created the
    check run, so ``auto`` shows them only when the App's credentials are configured."""
    if args.queue_buttons == "auto":
        return ctx.app_id is not None and bool(ctx.app_private_key)
    return args.queue_buttons == "on"


def _external_id(plans: Sequence[tuple[str, str]]) -> str:
    from app.execute.queue import execute_external_id

    return execute_external_id(plans)


def _carries_state(environ: Mapping[str, str]) -> bool:
    """A shared PostgreSQL store needs no carrying: every runner sees it."""
    from app.settings import Settings

    return Settings.from_env(environ).database_url is None


def _restore_state(args, ctx: ActionsContext, github, data_dir: Path, signing) -> list[str]:  # type: ignore[no-untyped-def]
    """On a runner without local state, restore the signed copy the last run left (if any).

    Raises ``AttestationError`` when a copy exists but cannot be trusted: running without it
    could repeat completed steps, running with it could skip steps or inject outputs, so no
    plan runs (fail closed) until a person looks (docs/runbooks.md).
    """
    from app.execute.state_carry import STATE_PATH, check_state, unpack
    from app.github.attestations import AttestationStore
    from app.signing import verify_signed_document

    if (data_dir / "state.db").exists():
        return []
    store = AttestationStore(github.client, branch=args.attestation_branch)
    head = store.head()
    blob = _read_blob(github, head, STATE_PATH) if head else None
    if blob is None:
        return []
    hint = (
        f"someone must check who changed {STATE_PATH} on {args.attestation_branch}; to start "
        "over on purpose, delete state/ from that branch (completed steps may then run again)"
    )
    if signing is None:
        raise AttestationError(
            f"{args.attestation_branch}:{STATE_PATH} holds earlier runs' state, but no executor "
            "signer is configured to verify it (--attest-run)",
            check="signer",
            hint=hint,
        )
    statement = None
    for kind in ("sigstore", "dsse"):
        statement = store.read(f"{STATE_PATH}.{kind}.json", at=head)
        if statement is not None:
            break
    if statement is None:
        raise AttestationError(
            f"{STATE_PATH}: no signed statement beside it", check="missing", hint=hint
        )
    try:
        signed = verify_signed_document(statement, signing.trust, source=f"{STATE_PATH} statement")
        check_state(blob, signed.payload_type, signed.payload, repository=ctx.repo)
    except AttestationError as exc:
        exc.hint = hint
        raise
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = data_dir / "state.db.restore"
    tmp.write_bytes(unpack(blob))
    tmp.replace(data_dir / "state.db")
    return [
        f"Run state restored from `{args.attestation_branch}:{STATE_PATH}` (signature verified).",
        "",
    ]


def _read_blob(github, commit: str, path: str) -> bytes | None:  # type: ignore[no-untyped-def]
    """A file of any size (to 100 MB) at ``commit``, through the git data API: commit -> tree
    (recursive) -> blob. The contents API returns no content above 1 MB."""
    transport = github.client.transport
    owner, _, name = github.client.full_name.partition("/")
    base = f"/repos/{quote(owner)}/{quote(name)}"
    tree = transport.request("GET", f"{base}/git/commits/{commit}").data["tree"]["sha"]
    listing = transport.request("GET", f"{base}/git/trees/{tree}", params={"recursive": "1"}).data
    sha = next(
        (e["sha"] for e in listing.get("tree", []) if e.get("path") == path),
        None,
    )
    if sha is None:
        return None
    data = transport.request("GET", f"{base}/git/blobs/{sha}").data
    return base64.b64decode(data["content"]) if data.get("encoding") == "base64" else None


def _save_state(args, ctx: ActionsContext, github, data_dir: Path, signing, writes) -> list[str]:  # type: ignore[no-untyped-def]
    """Store a signed copy of the state for the next workflow run (best effort, noted)."""
    from app.approvals.attest import INTOTO_PAYLOAD_TYPE
    from app.execute.state_carry import STATE_PATH, snapshot, state_statement

    db = data_dir / "state.db"
    if not db.exists():
        return []
    if signing is None:
        return [
            "Run state NOT carried to the next workflow run: no executor signer (--attest-run); "
            "a re-run starts from nothing.",
            "",
        ]
    try:
        blob = snapshot(db)
        signer = signing.make()
        payload = state_statement(
            blob, repository=ctx.repo, commit=ctx.after, workflow_run=ctx.run_url or ""
        )
        document = signer.sign(INTOTO_PAYLOAD_TYPE, payload)
        store = writes.store(args.attestation_branch)
        store.store(STATE_PATH, blob, message=f"plangate: executor state after {ctx.after[:12]}")
        store.store(
            f"{STATE_PATH}.{signer.kind}.json",
            document,
            message=f"plangate: executor state statement after {ctx.after[:12]}",
        )
    except (PlangateError, OSError, ValueError) as exc:
        print(f"plangate: run state not carried: {exc}", file=sys.stderr)
        return [writes.failed("Run state NOT carried to the next workflow run", exc), ""]
    return [f"Run state carried: `{args.attestation_branch}:{STATE_PATH}` (signed).", ""]


def _run_secrets(plan: Any, scoped: Any) -> dict[str, str]:
    """The secrets a run may name: never the job's own ``GITHUB_TOKEN``/``GH_TOKEN`` (the
    executor's credential); ``GITHUB_TOKEN`` is the run's scoped token when one was minted."""
    from app.cli.run import _secrets

    secrets = {k: v for k, v in _secrets(plan).items() if k not in ("GITHUB_TOKEN", "GH_TOKEN")}
    if scoped is not None:
        secrets["GITHUB_TOKEN"] = scoped.token
    return secrets


def _mint_run_token(ctx: ActionsContext, scope: Any, *, purpose: str = "run token") -> Any:
    """An installation token (``ScopedToken``) with exactly ``scope``, or None without App
    credentials. Only the scope is printed, never the token."""
    if ctx.app_id is None or not ctx.app_private_key:
        return None
    from app.github.auth import AppCredentials, InstallationTokens, repo_installation

    tokens = InstallationTokens(
        AppCredentials(app_id=ctx.app_id, private_key=ctx.app_private_key, base_url=ctx.api_url)
    )
    installation = repo_installation(tokens, f"{scope.owner}/{scope.repositories[0]}")
    scoped = tokens.scoped_token(
        installation, repositories=scope.repositories, permissions=scope.permissions
    )
    print(f"plangate: {purpose} scoped to {scope.describe()}", file=sys.stderr)
    return scoped


#: what to set when the App's credentials are missing (env names, and the workflow's secrets)
_APP_SECRETS = (
    "GITHUB_APP_ID and GITHUB_PRIVATE_KEY (in plangate-execute.yml, from the secrets "
    "PLANGATE_APP_ID and PLANGATE_APP_PRIVATE_KEY)"
)


class _AttestationWrites:
    """What the executor writes the attestation branch with: run attestations, the carried
    run state, used queue requests.

    The branch is protected so that only the Plangate App can push to it (docs/github-app.md):
    the job's ``GITHUB_TOKEN`` is refused there. With the App's credentials the executor mints
    its own installation token for these writes, limited to this repository and
    ``contents: write``; it stays in memory (never printed, never in an event or a check run),
    is minted by ``open`` at start-up (broken credentials fail before anything changes),
    replaced before its hour runs out and revoked by ``close``.

    Reads of the branch (the approval, carried state, cancel requests), the check run,
    comments, issues and the lock refs keep the job's token: it reads a protected branch fine,
    and a token that can write the branch should be used for nothing else.

    Without App credentials the writes use the job's token: a branch without that protection
    (local trials, GHES without rulesets) still works. Where the branch is protected they fail;
    each failure is recorded (``failed``) so the check run does not say a plain "success".
    """

    def __init__(self, github: Any, ctx: ActionsContext, *, clock: Callable[[], float] = time.time):
        self._github = github
        self._ctx = ctx
        self._clock = clock
        self._token: Any = None
        self._client: Any = None
        #: writes that failed (messages for the check run; the run's outcome is unchanged)
        self.failures: list[str] = []

    @property
    def with_app(self) -> bool:
        return self._ctx.app_id is not None and bool(self._ctx.app_private_key)

    def store(self, branch: str) -> Any:
        """An ``AttestationStore`` that writes (and reads back what it writes) with our token."""
        from app.github.attestations import AttestationStore

        return AttestationStore(self._repo_client(), branch=branch)

    def failed(self, what: str, exc: BaseException) -> str:
        from app.errors import GitHubError
        from app.github.attestations import AttestationBranchRefused

        message = f"{what}: {exc}"
        if self.with_app and isinstance(exc, AttestationBranchRefused):
            message += (
                " (written with the Plangate App's own token: put the App on the bypass list "
                "of the ruleset that protects the branch, or check that GITHUB_APP_ID and "
                "GITHUB_PRIVATE_KEY are this App's; docs/github-app.md)"
            )
        elif not self.with_app and isinstance(exc, GitHubError):  # not for a signing failure
            message += (
                f" (written with the job's GITHUB_TOKEN: no App credentials; if the branch "
                f"accepts pushes only from the Plangate App, set {_APP_SECRETS})"
            )
        self.failures.append(message)
        return message

    def missing_credentials_note(self, branch: str) -> list[str]:
        """Said once, up front, when the branch writes cannot use the App's token."""
        if self.with_app:
            return []
        text = (
            f"({_APP_SECRETS} are not set): writes to `{branch}` use the job's GITHUB_TOKEN. "
            "If that branch accepts pushes only from the Plangate App (docs/github-app.md), "
            "this run cannot store its run attestation (what ran, signed) nor carry its run "
            "state to the next workflow run."
        )
        print(f"plangate: no App credentials {text}", file=sys.stderr)
        return [f"**No App credentials** {text}", ""]

    def open(self) -> None:
        """With App credentials, mint the token now, so that credentials which cannot mint one
        (a malformed key, a wrong App id, the App not installed here or without
        ``contents: write``) fail before anything changes: ``InputError`` (exit 2) naming the
        variables, instead of a warning after the plans ran. GitHub being unreachable is not
        a credentials problem: that error is raised as it is."""
        if not self.with_app or self._token is not None:
            return
        from jwt import PyJWTError

        from app.errors import GitHubUnavailable, RateLimited

        try:
            self._repo_client()
        except (GitHubUnavailable, RateLimited):
            raise
        except (PlangateError, PyJWTError, ValueError) as exc:
            detail = exc.message if isinstance(exc, PlangateError) else f"{type(exc).__name__}"
            raise InputError(
                f"the Plangate App's credentials (GITHUB_APP_ID={self._ctx.app_id}, "
                f"GITHUB_PRIVATE_KEY) cannot mint the token that writes the attestation "
                f"branch of {self._ctx.repo}: {detail}",
                hint=f"set {_APP_SECRETS} to the Plangate App's id and private key (PEM), and "
                f"install the App on {self._ctx.repo} with contents: write; or unset both to "
                "write with the job's GITHUB_TOKEN (docs/executor.md). Nothing ran.",
            ) from exc

    def close(self) -> None:
        """Revoke our token (best effort: it expires within the hour anyway)."""
        token, self._token, self._client = self._token, None, None
        if token is not None:
            self._revoke(token)

    def _repo_client(self) -> Any:
        if not self.with_app:
            return self._github.client
        if self._token is None or self._clock() > self._token.expires_at - 300:
            from app.execute.github_access import attestation_branch_scope
            from app.github.auth import token_transport
            from app.github.client import GitHubCache, RepoClient

            old = self._token
            scope = attestation_branch_scope(self._ctx.repo)
            self._token = _mint_run_token(self._ctx, scope, purpose="attestation-branch token")
            transport = token_transport(self._token.token, base_url=self._ctx.api_url)
            self._client = RepoClient(transport, self._ctx.repo, cache=GitHubCache())
            if old is not None:
                self._revoke(old)
        return self._client

    def _revoke(self, token: Any) -> None:
        from app.github.auth import revoke_token

        try:
            revoke_token(token.token, base_url=self._ctx.api_url)
        except PlangateError as exc:
            print(f"plangate: the attestation-branch token was not revoked: {exc}", file=sys.stderr)


def _revoke(ctx: ActionsContext, scoped: Any, outcome: Any) -> None:
    from app.github.auth import revoke_token

    try:
        revoke_token(scoped.token, base_url=ctx.api_url)
    except PlangateError as exc:  # it expires within the hour anyway
        outcome.warnings.append(f"the run's GitHub token could not be revoked: {exc}")


def _locks(args, ctx: ActionsContext, github, state):  # type: ignore[no-untyped-def]
    """Resource locks shared by every runner: git refs in the repository (docs/executor.md).

    ``--locks local`` keeps them in this runner's SQLite file, which only serialises plans
    within one job (the workflow's ``concurrency:`` group is then the only line across runs).
    """
    import asyncio

    from app.execute.github_locks import GitRefLocks

    if args.locks == "local":
        return state.lock_manager(
            now=time.time, sleep=asyncio.sleep, lease=ctx.lock_lease, skew=ctx.lock_skew
        )
    return GitRefLocks(
        github.client.transport,
        ctx.repo,
        now=time.time,
        sleep=asyncio.sleep,
        lease=ctx.lock_lease,
        skew=ctx.lock_skew,
        run_url=ctx.run_url or "",
    )


@dataclass(frozen=True)
class RunSigning:
    """What signs the executor's own documents (run attestations, the carried state), and the
    trust that verifies them again (the key's public half, or this workflow's identity)."""

    make: Callable[[], Any]
    trust: Any


def _run_signer_factory(
    args: argparse.Namespace, environ: Mapping[str, str], ctx: ActionsContext
) -> RunSigning | None:
    """What signs run attestations (``--attest-run``); None: runs are not attested.

    A key is loaded now (a bad key fails before anything runs). The keyless signer is made
    at the end of each run: the job's OIDC token is short-lived, runs may be long.
    """
    from app.settings import Settings
    from app.signing import Trust, TrustedKey

    if args.attest_run == "off":
        return None
    key = args.signing_key or Settings.from_env(environ).signing_key_path
    if key is not None and args.attest_run in ("auto", "key"):
        from cryptography.hazmat.primitives import serialization

        from app.signing.local_key import LocalKeySigner, load_private_key

        private = load_private_key(Path(key))
        signer = LocalKeySigner(private)
        pem = (
            private.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )
        return RunSigning(
            lambda: signer, Trust(keys=(TrustedKey(public_key_pem=pem, name="executor"),))
        )
    if args.attest_run == "key":
        raise InputError(
            "--attest-run key: no signing key",
            hint="pass --signing-key PEM or set PLANGATE_SIGNING_KEY_PATH",
        )
    url = environ.get("ACTIONS_ID_TOKEN_REQUEST_URL")
    token = environ.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
    if not url or not token:
        if args.attest_run == "sigstore":
            raise InputError(
                "--attest-run sigstore: no Actions OIDC token available",
                hint="give the job `permissions: id-token: write`",
            )
        return None
    from app.signing import github_workflow_identity
    from app.signing.sigstore_backend import (
        SigstoreSigner,
        check_signing_context,
        fetch_actions_id_token,
    )

    check_signing_context(
        event_name=environ.get("GITHUB_EVENT_NAME", ""),
        ref=environ.get("GITHUB_REF", ""),
        default_branch=ctx.default_branch,
    )
    workflow_file = ctx.workflow.partition("@")[0].rsplit("/", 1)[-1]
    if not workflow_file.endswith((".yml", ".yaml")):
        raise InputError(
            f"GITHUB_WORKFLOW_REF={ctx.workflow!r} does not name a workflow file",
            hint="run plangate execute from the plangate-execute workflow",
        )
    expected = github_workflow_identity(
        ctx.repo, workflow_file, ctx.default_branch, server_url=ctx.server_url
    )

    def make() -> Any:
        return SigstoreSigner(
            identity_token=fetch_actions_id_token(request_url=url, request_token=token),
            expected=expected,
        )

    return RunSigning(make, Trust(identities=(expected,)))


def _attest_run(  # type: ignore[no-untyped-def]
    args,
    ctx: ActionsContext,
    github,
    loaded,
    outcome,
    approval_document,
    run_signer,
    started_at: datetime,
    finished_at: datetime,
    writes: _AttestationWrites,
) -> None:
    """Sign what ran, store it beside the approval on the attestation branch (with the App's
    token, ``writes``) and record ``run.attested`` in the audit trail. Never changes the run's
    status: a failure is a warning, and the check run is then neutral, not a plain success."""
    from app.approvals.run_attest import approval_digest, run_storage_path
    from app.audit.events import Actor
    from app.audit.git_store import GitAuditStore
    from app.execute.run_attestation import record_attested, sign_run

    result, pr = outcome.result, outcome.pr
    try:
        signed = sign_run(
            result,
            run_signer.make(),
            plan_path=outcome.path,
            started_at=started_at,
            finished_at=finished_at,
            approval=approval_digest(approval_document) if approval_document else None,
            invocation={
                "kind": "github-actions",
                "repository": ctx.repo,
                "commit": ctx.after,
                "pullRequest": pr.number,
                **({"workflowRun": ctx.run_url} if ctx.run_url else {}),
            },
        )
        where = run_storage_path(pr.number, pr.head_sha, result.run_id, signed.kind)
        stored = writes.store(args.attestation_branch).store(
            where,
            signed.document,
            message=f"plangate: run {result.run_id} of {outcome.path} ({result.status})",
        )
    except (PlangateError, OSError, ValueError) as exc:
        outcome.warnings.append(writes.failed("the run was NOT attested", exc))
        return
    outcome.attestation = f"`{stored.branch}:{where}` (commit `{stored.commit_sha[:12]}`)"
    try:
        store = GitAuditStore(Path.cwd())
        try:
            record_attested(
                store,
                signed,
                location=f"{stored.branch}:{where}@{stored.commit_sha}",
                actor=Actor(kind="workflow", id=ctx.workflow),
                now=lambda: datetime.now(UTC),
                team=loaded.plan.team,
                environment=loaded.plan.environment,
            )
        finally:
            store.close()
    except (PlangateError, OSError) as exc:
        outcome.warnings.append(f"run.attested was not recorded in the audit trail: {exc}")


def _warn(message: str, environ: Mapping[str, str]) -> None:
    """A warning on stderr; in Actions a ``::warning`` workflow command (an annotation on the
    workflow run), since the job itself stays green."""
    if environ.get("GITHUB_ACTIONS") == "true":
        from app.report import _escape_data

        print(f"::warning title=plangate execute::{_escape_data(message)}", file=sys.stderr)
    else:
        print(f"plangate: warning: {message}", file=sys.stderr)


def _step_env() -> dict[str, str]:
    """The environment steps see: never the GitHub token (steps name their secrets)."""
    return {k: v for k, v in os.environ.items() if k not in ("GITHUB_TOKEN", "GH_TOKEN")}


def _push_audit(ctx: ActionsContext) -> list[str]:
    from app.audit.errors import AuditError
    from app.audit.git_store import GitAuditStore

    store = GitAuditStore(Path.cwd())
    try:
        tip = authenticated_push(store, server_url=ctx.server_url, repo=ctx.repo, token=ctx.token)
    except AuditError as exc:
        print(f"plangate: audit push failed: {exc.diagnostics()}", file=sys.stderr)
        return [f"Audit trail NOT pushed ({exc}); the workflow artifact keeps the run record.", ""]
    finally:
        store.close()
    return [f"Audit trail pushed: `plangate/audit` at `{(tip or 'none')[:12]}`.", ""]


def _finish_check(
    github, check_id: int, ctx, outcomes, deleted, notes, error, *, buttons=False, unrecorded=()
) -> None:  # type: ignore[no-untyped-def]
    from app.execute import github_mode as gm
    from app.execute.queue import check_actions
    from app.github.checks import check_run_requests

    outcome = gm.render_check(
        outcomes, deleted=deleted, run_url=ctx.run_url, notes=notes, error=error
    )
    if unrecorded and outcome.conclusion == "success":
        # the plans succeeded but their record is incomplete: not a plain green check. Neutral,
        # not failure: the job stays green so nobody re-runs (and repeats steps) to fix a
        # credentials problem; the summary says what is missing (docs/executor.md)
        import dataclasses

        outcome = dataclasses.replace(
            outcome,
            conclusion="neutral",
            title=f"{outcome.title}; NOT recorded on the attestation branch"[:255],
        )
    ran = [(o.path, o.result.plan_digest) for o in outcomes if o.result is not None]
    first, more = check_run_requests(
        outcome,
        head_sha=ctx.after,
        details_url=ctx.run_url,
        external_id=_external_id(ran) if ran else ctx.after,
    )
    first.pop("head_sha", None)
    # Retry/Cancel only on plans that ran (a refusal is fixed by a new approval, not a retry)
    if buttons:  # [] clears the Cancel button of the live progress
        first["actions"] = check_actions([o.status for o in outcomes if o.result is not None])
    first["completed_at"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    # GitHub appends the annotations of every update: an update it applied but answered with a
    # 5xx or a reset must not be sent again. The run was created (and kept up to date) without
    # annotations, so it holds none before these updates.
    github.update_check_run_batches(check_id, [first, *more], present=[])


def _comment(github, ctx: ActionsContext, outcomes) -> None:  # type: ignore[no-untyped-def]
    from app.execute import github_mode as gm

    by_pr: dict[int, list[gm.PlanOutcome]] = {}
    for o in outcomes:
        if o.pr is not None:
            by_pr.setdefault(o.pr.number, []).append(o)
    for number, items in sorted(by_pr.items()):
        try:
            github.comment(number, gm.render_comment(items, run_url=ctx.run_url))
        except PlangateError as exc:  # the check run already carries the outcome
            print(f"plangate: cannot comment on PR #{number}: {exc}", file=sys.stderr)


def _print(args, outcomes, deleted, notes) -> None:  # type: ignore[no-untyped-def]
    if args.format == "json":
        doc = {
            "plans": [
                {
                    "path": o.path,
                    "status": o.status,
                    "pull_request": o.pr.number if o.pr else None,
                    "refusal": o.refusal,
                    "result": o.result.to_dict() if o.result else None,
                }
                for o in outcomes
            ],
            "deleted": list(deleted),
        }
        print(json.dumps(doc, indent=2, default=str))
        return
    for o in outcomes:
        line = f"{o.path}: {o.status}"
        if o.refusal:
            line += f" — {o.refusal}"
        elif o.result is not None and o.result.reason:
            line += f" — {o.result.reason}"
        print(line)
    for path in deleted:
        print(f"{path}: deleted (not run)")
    for note in notes:
        if note:
            print(note)


def _trust(args: argparse.Namespace, policy: Any) -> Any:
    """Policy ``signers`` plus ``--trusted-key``; empty trust is refused later (fail closed)."""
    from app.signing import Trust, TrustedKey
    from app.signing.base import trust_from_policy

    keys = []
    for path in args.trusted_key:
        try:
            keys.append(TrustedKey(public_key_pem=path.read_text(), name=path.name))
        except OSError as exc:
            raise InputError(f"{path}: cannot read trusted key ({exc.strerror})") from exc
        except ValueError as exc:
            raise InputError(f"{path}: not a usable public key: {exc}") from exc
    from_policy = trust_from_policy(policy.signers)
    return Trust(keys=(*keys, *from_policy.keys), identities=from_policy.identities)


def _write_metrics(data_dir: Path) -> None:
    """Prometheus text file of this run, uploaded by the workflow as part of the run artifact."""
    from app.observability.metrics import write_textfile

    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        write_textfile(data_dir / "metrics.prom")
    except OSError as exc:  # metrics are best effort: never change the run's outcome
        print(f"plangate: cannot write {data_dir / 'metrics.prom'}: {exc}", file=sys.stderr)


def _data_dir(environ: Mapping[str, str]) -> Path:
    from app.settings import Settings

    return Settings.from_env(environ).data_dir


def _github(ctx: ActionsContext) -> RestExecuteGitHub:
    from app.github.auth import token_transport
    from app.github.client import GitHubCache, RepoClient

    if not ctx.token:
        raise InputError(
            "GITHUB_TOKEN is not set",
            hint="pass `GITHUB_TOKEN: ${{ secrets.GITHUB_TOKEN }}` to the step",
        )
    transport = token_transport(ctx.token, base_url=ctx.api_url)
    return RestExecuteGitHub(RepoClient(transport, ctx.repo, cache=GitHubCache()))
