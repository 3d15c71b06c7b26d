"""``plangate execute`` in GitHub Actions: which plans a push merged, and may they run?

The orchestration between the push event and the runner, kept free of HTTP and git: GitHub is
seen through the narrow ``ExecuteGitHub`` port, the diff through plain ``(status, path)`` pairs,
and ``now`` is passed in. The CLI (``app/cli/execute.py``) supplies the adapters.

What it decides:

* **Changed plans** (``changed_plans``): YAML files under ``plans/`` added or modified between
  ``before`` and ``after``; deleted ones are reported and never run.
* **The merged pull request** (``merged_pull``): of the PRs GitHub associates with the merge
  commit, the one that was merged *as* that commit (``merge_commit_sha == after``). Anything else
  (a direct push, a PR merged elsewhere) is refused: only a reviewed pull request carries an
  approval.
* **The approval** (``verify_plan``): the attestation on the bot-only attestation branch at
  ``pr-<N>/<head sha>.<kind>.json`` (sigstore first, then the local-key DSSE form), verified
  with ``verify_for_execution`` against the plan digest *in the merge commit*, the PR number,
  its head SHA and the trust from the default branch's policy.
* **A changed policy** (``policy_accepts``): the attestation records the policy digest at
  approval time; the executor runs under the default branch's policy *now*. If they differ the
  approval is not refused outright (an unrelated policy edit merged in between must not strand
  every approved plan) but re-judged: the current policy must still allow the plan, and its
  approval requirements must be met by the approvers the attestation records (``simulate_gate``,
  the author never counts; team requirements count only members the policy lists, since the
  executor does not query team membership). A tightened policy therefore refuses
  (``check == "policy"``).
* **What to say** (``render_check``, ``render_comment``): the ``plangate/execute`` check run and
  the PR comment, from the run results.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from app.approvals.attest import ApprovalStatement, storage_path
from app.approvals.gate import simulate_gate
from app.approvals.verify import VerifiedApproval, verify_for_execution
from app.errors import AttestationError
from app.execute.queue import check_actions
from app.execute.result import RunResult
from app.github.checks import Annotation, CheckOutcome, Conclusion, truncate
from app.plan.model import Plan
from app.policy.context import EvalContext
from app.policy.engine import evaluate
from app.policy.loader import PolicySet
from app.signing import Trust

__all__ = [
    "ATTESTATION_KINDS",
    "CHECK_NAME",
    "EXIT",
    "ChangedPlans",
    "CheckRunProgress",
    "ExecuteGitHub",
    "MergedPull",
    "PlanOutcome",
    "VerifiedPlanGate",
    "annotations_for",
    "changed_plans",
    "conclusion_for",
    "exit_code",
    "fetch_attestation",
    "merged_pull",
    "policy_accepts",
    "render_check",
    "render_comment",
    "verify_plan",
]

CHECK_NAME = "plangate/execute"
#: tried in this order: the App signs with sigstore; the local-key DSSE form is the fallback
ATTESTATION_KINDS = ("sigstore", "dsse")
ZERO_SHA = "0" * 40

#: like ``plangate run``: 0 succeeded · 1 refused · 2 invalid input · 3 failed · 4 paused
EXIT = {
    "succeeded": 0,
    "dry_run": 0,
    "refused": 1,
    "invalid": 2,
    "compensated": 3,
    "aborted": 3,
    "compensation_failed": 3,
    "paused": 4,
    "needs_attention": 4,
}
#: with several plans the worst outcome decides: a failure outranks a pause, which outranks a
#: refusal (something ran and needs a human) — and any of them outranks success
_SEVERITY = {0: 0, 1: 1, 4: 2, 2: 3, 3: 4}


class ExecuteGitHub(Protocol):
    """The GitHub calls ``plangate execute`` makes (``app/cli/execute.py`` implements them)."""

    def pulls_for_commit(self, sha: str) -> list[Mapping[str, Any]]:
        """``GET /repos/{o}/{r}/commits/{sha}/pulls`` (pull request objects)."""
        ...

    def file_at(self, path: str, ref: str) -> bytes | None:
        """A file's bytes at a branch or commit, None if absent (contents API)."""
        ...


@dataclass(frozen=True, slots=True)
class ChangedPlans:
    changed: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()


def _is_plan(path: str) -> bool:
    return path.startswith("plans/") and path.endswith((".yaml", ".yml"))


def changed_plans(diff: Iterable[tuple[str, str]]) -> ChangedPlans:
    """``(status, path)`` pairs of a git diff -> plans to run and plans deleted.

    Status letters as ``git diff --name-status``: ``A``/``M``/``C``/``T`` run the path, ``D``
    reports it; a rename ``R`` arrives as ``D old`` + ``A new`` from the adapter.
    """
    changed: set[str] = set()
    deleted: set[str] = set()
    for status, path in diff:
        if not _is_plan(path):
            continue
        if status.startswith("D"):
            deleted.add(path)
        else:
            changed.add(path)
    return ChangedPlans(tuple(sorted(changed)), tuple(sorted(deleted - changed)))


@dataclass(frozen=True, slots=True)
class MergedPull:
    number: int
    head_sha: str
    author: str
    url: str


def merged_pull(pulls: Sequence[Mapping[str, Any]], merge_sha: str) -> MergedPull:
    """The pull request merged as ``merge_sha``; refuses (``pull_request``) if there is none."""
    for pr in pulls:
        if pr.get("merged_at") and pr.get("merge_commit_sha") == merge_sha:
            return MergedPull(
                number=int(pr["number"]),
                head_sha=str(pr["head"]["sha"]),
                author=str((pr.get("user") or {}).get("login", "")),
                url=str(pr.get("html_url", "")),
            )
    seen = ", ".join(f"#{p.get('number')}" for p in pulls) or "none"
    raise AttestationError(
        f"commit {merge_sha} is not the merge commit of a merged pull request "
        f"(associated pull requests: {seen})",
        check="pull_request",
        hint="plans run only when merged through a reviewed pull request; direct pushes to the "
        "default branch never execute",
    )


def fetch_attestation(github: ExecuteGitHub, branch: str, pr: MergedPull) -> tuple[str, bytes]:
    """``(source, document)`` from the attestation branch; refuses (``format``) when absent."""
    tried = []
    for kind in ATTESTATION_KINDS:
        path = storage_path(pr.number, pr.head_sha, kind)
        tried.append(path)
        document = github.file_at(path, branch)
        if document is not None:
            return f"{branch}:{path}", document
    raise AttestationError(
        f"no approval attestation for PR #{pr.number} at head {pr.head_sha} on branch "
        f"{branch} (looked for {', '.join(tried)})",
        check="format",
        hint="the plan was merged without a recorded approval; approve it on a pull request "
        "so the Plangate App records the attestation, then merge again",
    )


def policy_accepts(
    plan: Plan, plan_path: str, policy: PolicySet, author: str, now: datetime
) -> Callable[[ApprovalStatement], bool]:
    """Does the *current* policy accept an approval recorded under an older one?

    The plan must still be allowed, and the recorded approvers (logins) must satisfy the current
    approval requirements as if they approved now; the PR author never counts.
    """

    def accepts(statement: ApprovalStatement) -> bool:
        decision = evaluate(plan, policy, EvalContext(now=now, author=author, plan_path=plan_path))
        if not decision.allowed or decision.approvals is None:
            return False
        approvers = sorted({a.login for a in statement.predicate.approvers})
        return simulate_gate(decision.approvals, author, approvers, now=now).satisfied

    return accepts


def verify_plan(
    *,
    plan: Plan,
    plan_path: str,
    plan_digest: str,
    document: bytes,
    source: str,
    trust: Trust,
    repo: str,
    pr: MergedPull,
    policy: PolicySet,
    now: datetime,
    repo_id: int | None = None,
) -> VerifiedApproval:
    """Verify ``document`` for this plan, PR, head and policy (raises ``AttestationError``)."""
    if trust.empty:
        raise AttestationError(
            "no trusted approval signers: the policy lists no `signers` and no --trusted-key "
            "was given",
            check="signer",
            hint="add the approval signer to the default branch's policy (`signers:`)",
        )
    return verify_for_execution(
        plan_path,
        plan_digest,
        document,
        trust,
        repo,
        pr.number,
        now,
        expected_repo_id=repo_id,
        expected_head_sha=pr.head_sha,
        expected_policy_digest=policy.digest,
        policy_accepts=policy_accepts(plan, plan_path, policy, pr.author, now),
        source=source,
    )


@dataclass
class VerifiedPlanGate:
    """``ApprovalGate`` for one already verified plan: re-verifies at the runner's call.

    Re-verifying costs one signature check and catches a digest mismatch between what was
    verified and what the runner is about to run.
    """

    verify_again: Callable[[], VerifiedApproval]
    last: VerifiedApproval | None = None

    def verify(self, plan: Any, digest: str) -> str:
        approval = self.verify_again()
        if approval.plan_digest != digest:
            raise AttestationError(
                f"{approval.plan_path}: verified digest {approval.plan_digest} is not the "
                f"digest being run ({digest})",
                check="digest",
            )
        self.last = approval
        return approval.summary()


# --- live progress ---------------------------------------------------------------------------

_PROGRESS_EVENTS = frozenset(
    {
        "run.started",
        "step.started",
        "step.succeeded",
        "step.failed",
        "step.paused",
        "step.retry",
        "step.needs_attention",
        "run.promoted",
        "canary.aborted",
        "compensation.succeeded",
        "compensation.failed",
        "run.finished",
    }
)


class CheckRunProgress:
    """``EventSink`` that keeps the in-progress ``plangate/execute`` check run current.

    Step events update a per-step table; the check run is PATCHed at most once per ``interval``
    seconds (GitHub's secondary rate limits punish bursts of writes) and on ``flush``. Reporting
    trouble never reaches the runner: a failed update is remembered in ``errors`` and the next
    one tries again (``EventSink.emit`` must not raise).
    """

    def __init__(
        self,
        update: Callable[[Mapping[str, Any]], None],
        *,
        plan_path: str,
        clock: Callable[[], float],
        interval: float = 10.0,
        run_url: str | None = None,
        buttons: bool = False,
        external_id: str | None = None,
    ) -> None:
        self._update = update
        #: a Cancel button while the run goes (``app.execute.queue.check_actions``); the
        #: ``external_id`` names the plan and digest for the App that receives the press
        self._buttons = buttons
        self._external_id = external_id
        self._plan_path = plan_path
        self._clock = clock
        self._interval = interval
        self._run_url = run_url
        self._last_sent: float | None = None
        self._dirty = False
        self.steps: dict[str, tuple[str, int]] = {}
        self.notes: list[str] = []
        self.run_id: str | None = None
        self.updates = 0
        self.errors: list[str] = []

    def emit(self, event_type: str, **fields: Any) -> None:
        if event_type not in _PROGRESS_EVENTS:
            return
        step = str(fields.get("step") or "")
        self.run_id = str(fields.get("run_id") or self.run_id or "") or None
        if event_type.startswith("step.") and step:
            status = event_type.split(".", 1)[1]
            attempts = self.steps.get(step, ("", 0))[1]
            if status in ("started", "retry"):
                attempts += 1
                status = "running"
            self.steps[step] = (status, max(attempts, 1))
        elif event_type == "run.promoted":
            self.notes.append("canary passed: promoted")
        elif event_type == "canary.aborted":
            self.notes.append(
                f"canary aborted: {fields.get('reason') or fields.get('error') or ''}"
            )
        elif event_type.startswith("compensation.") and step:
            self.notes.append(f"compensation of `{step}`: {event_type.split('.', 1)[1]}")
        self._dirty = True
        now = self._clock()
        if self._last_sent is None or now - self._last_sent >= self._interval:
            self._send(now)

    def flush(self) -> None:
        if self._dirty:
            self._send(self._clock())

    def body(self) -> dict[str, Any]:
        done = sum(1 for status, _ in self.steps.values() if status == "succeeded")
        lines = [
            f"Executing `{self._plan_path}`" + (f" (run `{self.run_id}`)" if self.run_id else "")
        ]
        if self._run_url:
            lines.append(f"Workflow run: {self._run_url}")
        lines += ["", "| step | status | attempts |", "|---|---|---:|"]
        lines += [f"| `{_cell(s)}` | {st} | {n} |" for s, (st, n) in self.steps.items()]
        lines += [f"- {_cell(n)}" for n in self.notes]
        body: dict[str, Any] = {
            "status": "in_progress",
            "output": {
                "title": f"{self._plan_path}: {done} step(s) done",
                "summary": truncate("\n".join(lines), pointer=self._run_url),
            },
        }
        if self._external_id:
            body["external_id"] = self._external_id
        if self._buttons:
            body["actions"] = check_actions(["running"])
        return body

    def _send(self, now: float) -> None:
        self._last_sent = now
        self._dirty = False
        try:
            self._update(self.body())
            self.updates += 1
        except Exception as exc:  # progress is best effort; the final update carries the verdict
            self.errors.append(f"{type(exc).__name__}: {exc}")


# --- outcome ---------------------------------------------------------------------------------


@dataclass
class PlanOutcome:
    """One changed plan: refused before it ran (``refusal``) or run (``result``)."""

    path: str
    pr: MergedPull | None = None
    approval: VerifiedApproval | None = None
    refusal: str | None = None
    result: RunResult | None = None
    warnings: list[str] = field(default_factory=list)
    #: step id -> line of the step in the plan file (for check-run annotations)
    step_lines: dict[str, int] = field(default_factory=dict)
    #: the plan in the merge commit does not load (a refusal with exit 2, not 1)
    invalid: bool = False
    #: where the signed run attestation (what ran) was stored, for the check run
    attestation: str | None = None

    @property
    def status(self) -> str:
        if self.result is not None:
            return self.result.status
        if self.invalid:
            return "invalid"
        return "refused" if self.refusal else "dry_run"

    @property
    def exit_code(self) -> int:
        return EXIT.get(self.status, 3)


def exit_code(outcomes: Sequence[PlanOutcome]) -> int:
    codes = [o.exit_code for o in outcomes] or [0]
    return max(codes, key=lambda c: _SEVERITY.get(c, 4))


def conclusion_for(outcomes: Sequence[PlanOutcome]) -> Conclusion:
    code = exit_code(outcomes)
    if code == 0:
        return "success"
    if code == 4:
        return "action_required"
    return "failure"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


_VERB = {
    "succeeded": "succeeded",
    "dry_run": "would run (dry run)",
    "refused": "was refused",
    "invalid": "is not a valid plan",
    "compensated": "failed and was rolled back",
    "aborted": "was aborted and rolled back",
    "compensation_failed": "failed and its rollback failed: manual rollback needed",
    "paused": "is paused",
    "needs_attention": "needs attention",
}


def _title(outcomes: Sequence[PlanOutcome], deleted: Sequence[str]) -> str:
    if not outcomes:
        return f"No plans to run ({len(deleted)} deleted)" if deleted else "No plans changed"
    if len(outcomes) == 1:
        o = outcomes[0]
        return f"{o.path} {_VERB.get(o.status, o.status)}"
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    parts = ", ".join(f"{n} {status.replace('_', ' ')}" for status, n in sorted(counts.items()))
    return f"{len(outcomes)} plans: {parts}"


def _plan_section(o: PlanOutcome) -> list[str]:
    lines = [f"### `{o.path}`: {_VERB.get(o.status, o.status)}", ""]
    if o.pr is not None:
        lines.append(f"Pull request: #{o.pr.number} (head `{o.pr.head_sha[:12]}`)")
    if o.approval is not None:
        lines.append(f"Approval: {o.approval.summary()}")
    if o.refusal:
        lines += ["", f"**Refused:** {o.refusal}"]
    r = o.result
    if r is not None:
        lines += [f"Run id (correlation id): `{r.run_id}` · plan digest `{r.plan_digest}`"]
        if r.reason:
            lines += ["", f"Reason: {r.reason}"]
        lines += ["", "| step | status | attempts | retries | error |", "|---|---|---:|---:|---|"]
        for s in r.steps.values():
            lines.append(
                f"| `{_cell(s.step_id)}` | {s.status} | {s.attempts} | {s.retries} "
                f"| {_cell(s.error or '')} |"
            )
        canary = _canary(r)
        if canary:
            lines += ["", f"Canary: {canary}"]
        if r.compensations:
            lines += ["", "Compensations:", "", "| step | status | attempts | note |"]
            lines.append("|---|---|---:|---|")
            for c in r.compensations:
                lines.append(
                    f"| `{_cell(c.step_id)}` | {c.status} | {c.attempts} "
                    f"| {_cell(c.error or c.note or '')} |"
                )
        if r.incident:
            lines += ["", f"Incident: {r.incident}"]
        if r.runbook is not None:
            lines += ["", "#### Manual rollback runbook", "", "```", r.runbook.render(), "```"]
        if o.attestation:
            lines += ["", f"Run attestation (what ran, signed): {o.attestation}"]
        for w in [*r.warnings, *o.warnings]:
            lines.append(f"- warning: {w}")
    lines.append("")
    return lines


def _canary(r: RunResult) -> str:
    if r.status == "aborted" and r.incident:
        return "aborted (probe failed); compensations ran"
    if any(s.error_kind and s.error_kind.startswith("probe.") for s in r.steps.values()):
        return "failed"
    return ""


def render_check(
    outcomes: Sequence[PlanOutcome],
    *,
    deleted: Sequence[str] = (),
    run_url: str | None = None,
    notes: Sequence[str] = (),
    error: str | None = None,
) -> CheckOutcome:
    """The ``plangate/execute`` check run: verdict title, per-plan Markdown summary.

    ``error``: the executor itself stopped (GitHub down, a crash); the check fails, whatever the
    plans that finished said, because the ones after it never ran.
    """
    lines: list[str] = []
    if error:
        lines += [f"**The executor stopped with an error:** {error}", ""]
    if run_url:
        lines += [f"Workflow run: {run_url}", ""]
    lines += list(notes)
    for o in outcomes:
        lines += _plan_section(o)
    if deleted:
        lines += ["Deleted plans (not run): " + ", ".join(f"`{p}`" for p in deleted), ""]
    if not outcomes and not deleted:
        lines.append("This push changed no plan under `plans/`.")
    return CheckOutcome(
        name=CHECK_NAME,
        conclusion="failure" if error else conclusion_for(outcomes),
        title=f"Execution stopped: {error}"[:255] if error else _title(outcomes, deleted),
        summary=truncate("\n".join(lines), pointer=run_url),
        annotations=tuple(a for o in outcomes for a in annotations_for(o)),
    )


def annotations_for(o: PlanOutcome) -> list[Annotation]:
    """A refusal on the plan's first line; each failed step or compensation on its step."""
    if o.refusal:
        return [Annotation(o.path, 1, o.refusal, title="plangate/execute: refused")]
    out: list[Annotation] = []
    r = o.result
    if r is None:
        return out
    for s in r.steps.values():
        if s.status in ("failed", "paused", "needs_attention"):
            level = "failure" if s.status == "failed" else "warning"
            out.append(
                Annotation(
                    o.path,
                    o.step_lines.get(s.step_id, 1),
                    f"step '{s.step_id}' {s.status}: {s.error or r.reason}",
                    level=level,
                    title=f"{s.step_id}: {s.status}",
                )
            )
    for c in r.compensations:
        if c.status == "failed":
            out.append(
                Annotation(
                    o.path,
                    o.step_lines.get(c.step_id, 1),
                    f"compensation of '{c.step_id}' failed: {c.error}; see the manual rollback "
                    "runbook in the summary",
                    title=f"{c.step_id}: compensation failed",
                )
            )
    return out


def render_comment(outcomes: Sequence[PlanOutcome], *, run_url: str | None = None) -> str:
    """The outcome comment on a merged pull request (its plans only)."""
    lines = [f"**Plangate execute:** {_title(outcomes, ())}", ""]
    for o in outcomes:
        lines += _plan_section(o)
    if run_url:
        lines.append(f"Workflow run: {run_url}")
    return truncate("\n".join(lines), pointer=run_url)
