"""Evaluating one pull request's plans and publishing the four check runs.

``plangate/validate`` is computed here (the plan loader on the files at the head SHA).
``plangate/policy``, ``plangate/cost`` and ``plangate/approval`` come from an ``Evaluator``:
the port through which the policy/cost engine and the approval gate plug in. Until one is
configured, ``NotConfiguredEvaluator`` makes those three checks *fail* (fail closed: a missing
engine must never look like an approval).

Wiring the real engine is one class implementing ``Evaluator.evaluate`` and passing it to
``Deps.from_settings(..., evaluator=...)``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol

from app.approvals.context import PullContext
from app.check import PLAN_SUFFIXES, FileResult
from app.errors import GitHubError, PlanError, PlangateError
from app.github.checks import (
    CHECK_NAMES,
    CheckOutcome,
    check_run_requests,
    failed_outcome,
    no_plans_outcome,
    render_validate,
)
from app.github.client import ChangedFile, PullRequestInfo, RepoClient, Review
from app.github.pull import GitHubPullContext, reviews_and_commits
from app.observability import metrics
from app.plan.loader import LoadedPlan, load_plan_bytes
from app.server.approval import ApprovalFacts, AttestationsNotConfigured, Attester
from app.server.evaluations import EvaluatedPlan
from app.server.inbox import InboxStore

__all__ = [
    "Evaluation",
    "EvaluationRequest",
    "Evaluator",
    "NotConfiguredEvaluator",
    "PullRequestPipeline",
    "check_external_id",
]

log = logging.getLogger(__name__)

PLANS_DIR = "plans"
POLICIES_DIR = "policies"


@dataclass(frozen=True, slots=True)
class EvaluationRequest:
    """Everything the engine needs about one pull request at one head SHA.

    ``policy_files`` are read from the *base* commit, never from the pull request under review.
    ``reviews`` are only those submitted on ``pull.head_sha`` (for display); the approval gate
    reads every review through ``context`` (the gate's own ``PullContext`` port: lazy, cached,
    team membership, permissions, blob SHAs for content-bound staleness) and decides which count.
    """

    repo: str
    pull: PullRequestInfo
    plans: tuple[LoadedPlan, ...]
    base_plans: Mapping[str, LoadedPlan]
    policy_files: Mapping[str, bytes]
    policy_tree_sha: str | None
    reviews: tuple[Review, ...]
    context: PullContext
    now: datetime
    changed_paths: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Evaluation:
    policy: CheckOutcome
    cost: CheckOutcome
    approval: CheckOutcome
    #: set when the approval gate ran: what the signed attestation records (the pipeline's
    #: ``Attester`` turns a satisfied gate into ``success`` only after storing it)
    approval_facts: ApprovalFacts | None = None


class Evaluator(Protocol):
    """The policy/cost engine and approval gate, seen from the server.

    Returns a decision (a failing check is a value, not an exception). May raise
    ``GitHubError`` from ``request.context`` (the delivery is retried) or ``PolicyLoadError``
    (rendered as failing checks); any other exception also fails the checks (fail closed).
    """

    def evaluate(self, request: EvaluationRequest) -> Evaluation: ...


class NotConfiguredEvaluator:
    """Fails ``policy``, ``cost`` and ``approval`` with "policy engine not configured".

    The approval check still lists who approved on the head SHA, so reviewers see their review
    counted where it will be once the gate is wired.
    """

    def evaluate(self, request: EvaluationRequest) -> Evaluation:
        detail = (
            "Plangate's policy engine is not configured on this server, so this check cannot "
            "pass. Plangate fails closed: no policy never means allow.\n\n"
            "Operators: start the server with an evaluator (see docs/github-app.md)."
        )
        approvers = [r for r in request.reviews if r.state == "APPROVED"]
        rows = ["| reviewer | review | state |", "|---|---|---|"]
        rows += [f"| @{r.user} | {r.id} | {r.state.lower()} |" for r in request.reviews]
        approval = f"{detail}\n\n### Reviews on {request.pull.head_sha[:7]}\n\n" + (
            "\n".join(rows) if request.reviews else "No reviews on the head SHA yet."
        )
        return Evaluation(
            policy=failed_outcome("plangate/policy", "Policy engine not configured", detail),
            cost=failed_outcome("plangate/cost", "Policy engine not configured", detail),
            approval=failed_outcome(
                "plangate/approval",
                f"Policy engine not configured ({len(approvers)} approval(s) on head)",
                approval,
            ),
        )


def is_plan_path(path: str) -> bool:
    return path.startswith(f"{PLANS_DIR}/") and path.endswith(PLAN_SUFFIXES)


Scope = Literal["all", "approval"]


class PullRequestPipeline:
    """Read the pull request through ``RepoClient``, evaluate, publish check runs.

    Each delivery publishes its own check runs (GitHub shows and enforces the latest run of each
    name on a commit). Their ids are remembered in the inbox per delivery, so a *retried*
    delivery updates the runs it created instead of making a second set (and duplicated
    deliveries never get this far: the inbox dedupes them).
    """

    def __init__(
        self,
        *,
        evaluator: Evaluator,
        inbox: InboxStore,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        details_url: str | None = None,
        attester: Attester | None = None,
        app_id: int | None = None,
        evaluations: EvaluationRecorder | None = None,
    ) -> None:
        self.evaluator = evaluator
        #: where the latest plans and verdicts per pull request go (the dashboard reads them)
        self.evaluations = evaluations
        #: this App's id: a resumed delivery only adopts check runs this App created
        self.app_id = app_id
        #: signs and stores the approval attestation; by default none (fail closed)
        self.attester: Attester = attester or AttestationsNotConfigured()
        self.inbox = inbox
        self._now = now
        self.details_url = details_url

    def run(
        self,
        client: RepoClient,
        pull: PullRequestInfo,
        *,
        scope: Scope = "all",
        with_reviews: bool = True,
        delivery_id: str,
    ) -> list[CheckOutcome]:
        outcomes = self.outcomes(client, pull, scope=scope, with_reviews=with_reviews)
        self._publish(client, pull, outcomes, delivery_id=delivery_id)
        return outcomes

    def outcomes(
        self,
        client: RepoClient,
        pull: PullRequestInfo,
        *,
        scope: Scope = "all",
        with_reviews: bool = True,
    ) -> list[CheckOutcome]:
        """Evaluate (and, through the ``Attester``, attest) without publishing check runs.

        ``plangate attest --pr`` in the keyless approval workflow runs exactly this, so the
        workflow and the App judge a pull request with the same code.
        """
        names = CHECK_NAMES if scope == "all" else ("plangate/approval",)
        files = client.changed_files(pull.number, head_sha=pull.head_sha, base_sha=pull.base_sha)
        plan_files = [f for f in files if is_plan_path(f.path) and f.status != "removed"]
        removed = [f.path for f in files if is_plan_path(f.path) and f.status == "removed"]
        if not plan_files:
            if self.evaluations is not None:
                self.evaluations.forget(client.full_name, pull.number)
            outcomes = [no_plans_outcome(n) for n in names]
            if removed:  # only removals: nothing to run, but say so instead of "no plans"
                outcomes = [
                    CheckOutcome(
                        o.name,
                        "neutral",
                        f"{len(removed)} plan file(s) removed; nothing to check",
                        "\n".join(f"- `{p}` removed" for p in removed),
                    )
                    for o in outcomes
                ]
            return outcomes

        results = [self._load(client, pull, f) for f in plan_files]
        validate = render_validate(results, removed=removed)
        existed = {f.path: f.previous_path or f.path for f in plan_files if f.status != "added"}
        outcomes = self._evaluate(
            client,
            pull,
            results,
            validate,
            existed=existed,
            files=files,
            with_reviews=with_reviews,
        )
        if self.evaluations is not None:  # the dashboard's pending plans
            self.evaluations.record(
                client.full_name,
                pull,
                [_evaluated(r) for r in results],
                outcomes,
                now=self._now().timestamp(),
            )
        return [o for o in outcomes if o.name in names]

    def _load(self, client: RepoClient, pull: PullRequestInfo, f: ChangedFile) -> FileResult:
        raw = client.blob(f.blob_sha) if f.blob_sha else client.file_at(f.path, pull.head_sha)
        if raw is None:
            return FileResult(f.path)
        try:
            return FileResult(f.path, plan=load_plan_bytes(f.path, raw))
        except PlanError as exc:
            return FileResult(f.path, issues=exc.issues)

    def _evaluate(
        self,
        client: RepoClient,
        pull: PullRequestInfo,
        results: list[FileResult],
        validate: CheckOutcome,
        *,
        existed: Mapping[str, str],
        files: list[ChangedFile],
        with_reviews: bool,
    ) -> list[CheckOutcome]:
        if validate.conclusion != "success":
            blocked = (
                "The plan files are invalid (see `plangate/validate`); policy, cost and "
                "approvals are evaluated once they are valid."
            )
            return [
                validate,
                *(
                    failed_outcome(n, "Blocked: plan files are invalid", blocked)
                    for n in CHECK_NAMES[1:]
                ),
            ]
        # always the *base* commit's policies/ (never the pull request's): one request at most
        tree_sha, policy_files = client.files_under(pull.base_sha, POLICIES_DIR)
        base_plans: dict[str, LoadedPlan] = {}
        for path, base_path in existed.items():
            # only files that existed at the base cost a request (cost diff base -> head)
            raw = client.file_at(base_path, pull.base_sha)
            if raw is not None:
                with suppress(PlanError):  # an invalid base version has no cost to diff against
                    base_plans[path] = load_plan_bytes(base_path, raw)
        # reviews, with the commits the gate needs cached, in one request where possible
        reviews = reviews_and_commits(client, pull) if with_reviews else []
        request = EvaluationRequest(
            repo=client.full_name,
            pull=pull,
            plans=tuple(r.plan for r in results if r.plan is not None),
            base_plans=base_plans,
            policy_files=policy_files,
            policy_tree_sha=tree_sha,
            reviews=tuple(r for r in reviews if r.commit_id == pull.head_sha),
            context=GitHubPullContext(client, pull, files=files, reviews=reviews),
            now=self._now(),
            changed_paths=tuple(f.path for f in files),
        )
        try:
            evaluation = self.evaluator.evaluate(request)
        except GitHubError:
            raise  # transient: the worker retries the delivery
        except PlangateError as exc:
            return [validate, *_all_failed(exc.diagnostics())]
        except Exception as exc:  # fail closed, and say so; the traceback goes to the log
            log.exception("evaluator crashed on %s#%s", client.full_name, pull.number)
            return [validate, *_all_failed(f"internal error: {type(exc).__name__}: {exc}")]
        approval = evaluation.approval
        if evaluation.approval_facts is not None:
            approval = self.attester.finalize(
                client, pull, request, evaluation.approval_facts, approval=approval, files=files
            )
        return [validate, evaluation.policy, evaluation.cost, approval]

    def _publish(
        self,
        client: RepoClient,
        pull: PullRequestInfo,
        outcomes: list[CheckOutcome],
        *,
        delivery_id: str,
    ) -> None:
        repo = client.full_name
        found: dict[str, int] | None = None  # external_id -> run id, read once if needed
        for outcome in outcomes:
            external_id = check_external_id(repo, pull, outcome.name, delivery_id)
            first, more = check_run_requests(
                outcome,
                head_sha=pull.head_sha,
                details_url=self.details_url,
                external_id=external_id,
            )
            existing = self.inbox.check_run_id(delivery_id, repo, pull.head_sha, outcome.name)
            if existing is None and self._resumed(delivery_id):
                # an earlier attempt may have been killed after GitHub created this run and
                # before the inbox remembered its id: find it by its external_id
                if found is None:
                    found = self._created_earlier(client, pull.head_sha)
                existing = found.get(external_id[:255])
                if existing is not None:
                    self.inbox.remember_check_run(
                        delivery_id, repo, pull.head_sha, outcome.name, existing
                    )
            # GitHub appends annotations on every update: update_check_run_batches sends each
            # one once, even when an update is applied but not confirmed (5xx, reset)
            if existing is None:
                check_id = client.create_check_run(first, app_id=self.app_id)
                self.inbox.remember_check_run(
                    delivery_id, repo, pull.head_sha, outcome.name, check_id
                )
                present = first.get("output", {}).get("annotations", [])
                client.update_check_run_batches(check_id, more, present=present)
            else:  # a run of an earlier attempt: what it holds is unknown
                check_id = existing
                update = {k: v for k, v in first.items() if k != "head_sha"}
                client.update_check_run_batches(check_id, [update, *more], present=None)
            metrics.CHECK_RUN_UPDATES.labels(
                check=outcome.name, conclusion=outcome.conclusion
            ).inc()

    def _resumed(self, delivery_id: str) -> bool:
        """Was this delivery attempted before (a retry, or resumed after a crash)?"""
        delivery = self.inbox.get(delivery_id)
        return delivery is not None and delivery.attempts > 1

    def _created_earlier(self, client: RepoClient, head_sha: str) -> dict[str, int]:
        """This App's runs on ``head_sha`` by external_id (one request per 100 runs)."""
        runs = client.check_runs_for_ref(head_sha, app_id=self.app_id)
        return {
            r.external_id: r.id
            for r in runs
            if r.external_id and (self.app_id is None or r.app_id == self.app_id)
        }


def check_external_id(repo: str, pull: PullRequestInfo, name: str, delivery_id: str) -> str:
    """The ``external_id`` of one check run: which delivery published which check on which head.

    Deterministic, so a delivery that is processed again (after a crash between GitHub creating
    the run and the inbox remembering its id) finds its own run and updates it instead of adding
    a second one. The digest comes first, so GitHub's 255-character cut never merges two ids.
    """
    key = f"{repo}\n{pull.number}\n{pull.head_sha}\n{name}\n{delivery_id}".encode()
    digest = hashlib.sha256(key).hexdigest()[:24]
    return f"plangate:{digest}:{repo}#{pull.number}@{pull.head_sha}"


class EvaluationRecorder(Protocol):
    """Keeps the latest evaluation per pull request (``app.server.evaluations.EvaluationLog``)."""

    def record(
        self,
        repo: str,
        pull: PullRequestInfo,
        plans: Sequence[EvaluatedPlan],
        outcomes: Sequence[CheckOutcome],
        *,
        now: float,
    ) -> None: ...

    def forget(self, repo: str, number: int) -> None: ...


def _evaluated(result: FileResult) -> EvaluatedPlan:
    if result.plan is None:
        return EvaluatedPlan(result.path, None)
    plan = result.plan.plan
    return EvaluatedPlan(result.path, plan.id, result.plan.digest, plan.team, plan.environment)


def _all_failed(detail: str) -> list[CheckOutcome]:
    return [failed_outcome(n, "Evaluation failed", detail) for n in CHECK_NAMES[1:]]
