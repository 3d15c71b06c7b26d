"""Queue ownership: retry and cancel requests, judged by policy, shared by the CLI and GitHub.

``plangate retry|cancel`` (``app/cli/queue.py``), the App's ``check_run.requested_action``
handler (``app/server/queue_actions.py``) and ``plangate execute --queue-request``
(``app/cli/execute.py``) all go through this module, so a request means the same thing
wherever it is made:

* ``decide(actor, verb, plan, digest, policy)`` -> ``QueueDecision``: policy ``queue`` via
  ``app.policy.engine.authorize``, with the deciding rule, its reason and the policy digest.
* ``prepare_retry`` / ``apply_cancel``: the state transitions on a ``QueueState`` (the
  ``RunStateStore`` methods they need): a ``paused``/``needs_attention``/interrupted run
  resumes as is, ``compensation_failed`` forgets its failed compensations and resumes the saga,
  ``compensated``/``aborted`` starts over; ``succeeded`` and ``cancelled`` are refused.
* ``audit_draft``: the ``queue.requested`` audit event of a decision.
* ``QueueRequest``: the record the App writes on the bot-only attestation branch
  (``request_path``); the executor runs a dispatched retry only with such a record (anyone with
  write access can dispatch the workflow, only the App can write the branch).
* ``execute_external_id`` / ``parse_external_id`` and ``check_actions``: what the
  ``plangate/execute`` check run carries so its Retry/Cancel buttons name the plans.

Pure: no I/O, no clock (``now`` is an argument), no GitHub.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from app.audit.events import Actor, AuditEventDraft
from app.errors import InputError
from app.plan.model import Plan
from app.policy.engine import authorize
from app.policy.loader import PolicySet

__all__ = [
    "CANCEL_STATES",
    "REQUEST_DIR",
    "REQUEST_KIND",
    "REQUEST_PAYLOAD_TYPE",
    "REQUEST_TTL",
    "RESUMABLE",
    "RETRY_STATES",
    "START_OVER",
    "CancelOutcome",
    "QueueDecision",
    "QueuePlan",
    "QueueRequest",
    "QueueState",
    "RetryOutcome",
    "Verb",
    "apply_cancel",
    "audit_draft",
    "cancel_path",
    "check_actions",
    "decide",
    "execute_external_id",
    "parse_external_id",
    "prepare_retry",
    "request_id_for",
    "request_path",
]

Verb = Literal["retry", "cancel"]

#: run states a retry re-runs as they are; anything else is refused with a reason
RESUMABLE = frozenset(
    {"paused", "needs_attention", "running", "compensating", "retrying", "refused"}
)
#: every effect was undone: a retry starts the run over
START_OVER = frozenset({"compensated", "aborted"})
#: ``plangate/execute`` outcomes that get a Retry button / a Cancel button
RETRY_STATES = frozenset(
    {"failed", "paused", "needs_attention", "compensation_failed", "compensated", "aborted"}
)
CANCEL_STATES = frozenset({"running", "paused"})

#: where the App writes queue requests on the attestation branch
REQUEST_DIR = "queue"
REQUEST_KIND = "plangate.dev/queue-request/v1"
#: the DSSE payload type of a request record the App signed (``QueueRequest.to_json`` inside)
REQUEST_PAYLOAD_TYPE = "application/vnd.plangate.queue-request+json"
#: a dispatched retry must find its request younger than this (a replay later is refused)
REQUEST_TTL = timedelta(hours=6)
_EXTERNAL_PREFIX = "pgx1"
_DIGEST_PREFIX = 16  # hex characters of the plan digest kept in the check run's external_id
_ID = re.compile(r"(retry|cancel)-[0-9a-f]{16}")


# --- the decision -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueDecision:
    """May ``actor`` ``verb`` this plan? ``rule``/``reason`` name the deciding policy rule."""

    actor: str
    verb: Verb
    plan_id: str
    team: str
    environment: str
    digest: str
    allowed: bool
    rule: str | None
    reason: str | None
    policy_digest: str
    #: ``"rule (source): reason"`` of each denying rule (empty when allowed)
    denials: tuple[str, ...] = ()

    @property
    def verdict(self) -> Literal["allow", "deny"]:
        return "allow" if self.allowed else "deny"

    def who(self) -> str:
        """``actor (rule)``: how a run's reason names the requester."""
        return f"{self.actor} ({self.rule or 'queue'})"


def decide(actor: str, verb: Verb, plan: Plan, digest: str, policy: PolicySet) -> QueueDecision:
    """Judge a queue request against policy ``queue`` (fail closed: no actor is a denial)."""
    if not actor:
        return QueueDecision(
            actor="",
            verb=verb,
            plan_id=plan.id,
            team=plan.team,
            environment=plan.environment,
            digest=digest,
            allowed=False,
            rule="queue.actor",
            reason="the request names no actor",
            policy_digest=policy.digest,
            denials=("queue.actor: the request names no actor",),
        )
    decision = authorize(actor, verb, plan, policy)
    first = decision.trace[0] if decision.trace else None
    return QueueDecision(
        actor=actor,
        verb=verb,
        plan_id=plan.id,
        team=plan.team,
        environment=plan.environment,
        digest=digest,
        allowed=decision.allowed,
        rule=first.rule if first else None,
        reason=first.reason if first else None,
        policy_digest=policy.digest,
        denials=tuple(f"{m.rule} ({m.source}): {m.reason}" for m in decision.denials),
    )


def audit_draft(
    decision: QueueDecision,
    *,
    now: datetime,
    correlation_id: str | None = None,
    run_status: str | None = None,
    note: str | None = None,
    via: str | None = None,
) -> AuditEventDraft:
    """The ``queue.requested`` audit event of a decision (allowed or denied).

    ``correlation_id``: the run's id; without a run, ``queue-<digest prefix>``. ``via``: where
    the request came from (``cli``, ``github:check_run/<id>``)."""
    correlation = correlation_id or "queue-" + decision.digest.removeprefix("sha256:")[:16]
    payload: dict[str, Any] = {
        "verb": decision.verb,
        "verdict": decision.verdict,
        "rule": decision.rule,
        "reason": decision.reason,
        "policy_digest": decision.policy_digest,
        "run_status": run_status,
        "note": note or None,
    }
    if via:
        payload["via"] = via
    return AuditEventDraft(
        type="queue.requested",
        timestamp=now,
        actor=Actor(kind="user", id=decision.actor or "unknown"),
        correlation_id=correlation,
        plan_id=decision.plan_id,
        plan_digest=decision.digest,
        team=decision.team,
        environment=decision.environment,
        payload=payload,
    )


# --- state transitions ------------------------------------------------------------------------


class QueueState(Protocol):
    """What the transitions need of a ``RunStateStore`` (``app/execute/store.py``)."""

    def get_run(self, digest: str) -> Any: ...

    def cancel_run(self, digest: str, reason: str, now: float) -> Any: ...

    def retry_compensations(self, digest: str, reason: str, now: float) -> int: ...

    def reset_run(self, digest: str) -> None: ...


@dataclass(frozen=True, slots=True)
class RetryOutcome:
    run_id: str
    #: the run's status before the retry
    status: str
    #: ``resume`` (as is), ``compensations`` (the saga again), ``start_over`` (reset)
    action: Literal["resume", "compensations", "start_over"]


def prepare_retry(
    state: QueueState, digest: str, *, label: str, reason: str, now: float
) -> RetryOutcome:
    """Put the run of ``digest`` where a re-run retries it; ``InputError`` when there is
    nothing to retry (no run, or it ``succeeded`` / was ``cancelled``). ``label`` names the
    plan in messages (its path)."""
    existing = state.get_run(digest)
    if existing is None:
        raise InputError(
            f"{label}: no run of this plan digest ({digest}) to retry",
            hint="start it with `plangate run`; a changed plan has a new digest",
        )
    status = str(existing.status)
    if status == "compensation_failed":
        state.retry_compensations(digest, reason, now)
        return RetryOutcome(existing.run_id, status, "compensations")
    if status in START_OVER:
        state.reset_run(digest)
        return RetryOutcome(existing.run_id, status, "start_over")
    if status in RESUMABLE:
        return RetryOutcome(existing.run_id, status, "resume")
    hint = (
        "`plangate run --restart` starts a cancelled run over"
        if status == "cancelled"
        else "nothing failed; a changed plan has a new digest"
    )
    raise InputError(
        f"{label}: run {existing.run_id} ended '{status}'; there is nothing to retry", hint=hint
    )


@dataclass(frozen=True, slots=True)
class CancelOutcome:
    run_id: str | None
    #: the run's status before the cancellation (None: there was no run)
    status: str | None
    #: False: nothing to do (no run, or it was already cancelled)
    changed: bool


def apply_cancel(state: QueueState, digest: str, *, reason: str, now: float) -> CancelOutcome:
    """Mark the run of ``digest`` cancelled. ``cancelled`` is final: the run's own final
    status never overwrites it (``finish_run``); a run still going stops before its next step
    and compensates what it changed (``Runner``). Releasing locks is the caller's (I/O)."""
    existing = state.get_run(digest)
    if existing is None:
        return CancelOutcome(None, None, False)
    status = str(existing.status)  # before: a store may hand back a live record
    if status == "cancelled":
        return CancelOutcome(existing.run_id, "cancelled", False)
    state.cancel_run(digest, reason, now)
    return CancelOutcome(existing.run_id, status, True)


# --- the App-written request record -----------------------------------------------------------


def request_id_for(verb: Verb, delivery_id: str) -> str:
    """A request id from the webhook delivery (``X-GitHub-Delivery``): a redelivery of the same
    button press maps to the same id, so it is recorded and dispatched once."""
    import hashlib

    return f"{verb}-{hashlib.sha256(delivery_id.encode()).hexdigest()[:16]}"


def request_path(request_id: str) -> str:
    if not _ID.fullmatch(request_id):
        raise InputError(
            f"queue request id {request_id!r} is not of the form retry-<16 hex>|cancel-<16 hex>",
            hint="pass the id the Plangate App dispatched the workflow with",
        )
    return f"{REQUEST_DIR}/requests/{request_id}.json"


def cancel_path(digest: str) -> str:
    """Where an allowed cancel of ``digest`` is recorded (one fixed path per digest, so the
    executor checks it with one read before each step)."""
    return f"{REQUEST_DIR}/cancel/{digest.removeprefix('sha256:')}.json"


@dataclass(frozen=True, slots=True)
class QueuePlan:
    path: str
    digest: str


@dataclass(frozen=True)
class QueueRequest:
    """One queue request as the App records it (allowed or denied)."""

    id: str
    verb: Verb
    actor: str
    repository: str
    commit: str
    plans: tuple[QueuePlan, ...]
    verdict: Literal["allow", "deny"]
    rules: tuple[str, ...]
    reasons: tuple[str, ...]
    policy_digest: str
    requested_at: datetime
    check_run_id: int | None = None
    delivery_id: str = ""

    def to_json(self) -> bytes:
        doc = {
            "kind": REQUEST_KIND,
            "id": self.id,
            "verb": self.verb,
            "actor": self.actor,
            "repository": self.repository,
            "commit": self.commit,
            "plans": [{"path": p.path, "digest": p.digest} for p in self.plans],
            "verdict": self.verdict,
            "rules": list(self.rules),
            "reasons": list(self.reasons),
            "policy_digest": self.policy_digest,
            "requested_at": self.requested_at.isoformat(),
            "check_run_id": self.check_run_id,
            "delivery_id": self.delivery_id,
        }
        return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, raw: bytes, *, source: str) -> QueueRequest:
        """Parse a stored record; ``InputError`` naming ``source`` and the field otherwise."""
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise InputError(f"{source}: not JSON ({exc})") from exc
        if not isinstance(doc, dict) or doc.get("kind") != REQUEST_KIND:
            raise InputError(f"{source}: not a {REQUEST_KIND} record")
        try:
            plans = tuple(QueuePlan(str(p["path"]), str(p["digest"])) for p in doc["plans"])
            verb = doc["verb"]
            if verb not in ("retry", "cancel"):
                raise ValueError(f"verb {verb!r}")
            verdict = doc["verdict"]
            if verdict not in ("allow", "deny"):
                raise ValueError(f"verdict {verdict!r}")
            requested_at = datetime.fromisoformat(str(doc["requested_at"]))
            if requested_at.tzinfo is None:
                raise ValueError("requested_at has no time zone")
            return cls(
                id=str(doc["id"]),
                verb=verb,
                actor=str(doc["actor"]),
                repository=str(doc["repository"]),
                commit=str(doc["commit"]),
                plans=plans,
                verdict=verdict,
                rules=tuple(str(r) for r in doc.get("rules") or ()),
                reasons=tuple(str(r) for r in doc.get("reasons") or ()),
                policy_digest=str(doc["policy_digest"]),
                requested_at=requested_at,
                check_run_id=doc.get("check_run_id"),
                delivery_id=str(doc.get("delivery_id") or ""),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{source}: bad queue request field: {exc}") from exc

    def check_for_execution(
        self, *, request_id: str, repository: str, verb: Verb, now: datetime
    ) -> None:
        """Fail closed unless this is an allowed ``verb`` request for ``repository``, with the
        id it is stored under, younger than ``REQUEST_TTL``."""
        problems = []
        if self.id != request_id:
            problems.append(f"its id is {self.id!r}, not {request_id!r}")
        if self.repository.lower() != repository.lower():
            problems.append(f"it is for {self.repository}, not {repository}")
        if self.verb != verb:
            problems.append(f"it asks to {self.verb}, not to {verb}")
        if self.verdict != "allow":
            problems.append("policy denied it")
        if not re.fullmatch(r"[0-9a-f]{40}", self.commit):
            problems.append(f"commit {self.commit!r} is not a commit SHA")
        if not self.plans:
            problems.append("it names no plan")
        age = now - self.requested_at
        if age > REQUEST_TTL or age < -timedelta(minutes=5):
            problems.append(
                f"it was made at {self.requested_at.isoformat()} (valid for "
                f"{int(REQUEST_TTL.total_seconds() // 3600)} h)"
            )
        if problems:
            raise InputError(
                f"queue request {request_id}: " + "; ".join(problems),
                hint="press Retry on the plangate/execute check run again",
            )


# --- the check run ----------------------------------------------------------------------------


def execute_external_id(plans: Sequence[tuple[str, str]]) -> str:
    """``plangate/execute``'s ``external_id``: ``pgx1;<path>=<digest prefix>;...``.

    The digest prefix lets the App tell whether the plan at that path in the merge commit is
    still the one that ran; plans that do not fit GitHub's 255 characters are left out (their
    buttons then do not name them: the CLI still works)."""
    out = _EXTERNAL_PREFIX
    for path, digest in plans:
        part = f";{path}={digest.removeprefix('sha256:')[:_DIGEST_PREFIX]}"
        if len(out) + len(part) > 255:
            break
        out += part
    return out


def parse_external_id(external_id: str | None) -> list[tuple[str, str]]:
    """``[(path, digest prefix)]`` of an ``execute_external_id``; [] for anything else."""
    if not external_id or not external_id.startswith(_EXTERNAL_PREFIX + ";"):
        return []
    out = []
    for part in external_id.split(";")[1:]:
        path, sep, prefix = part.rpartition("=")
        if sep and path and re.fullmatch(r"[0-9a-f]{16}", prefix):
            out.append((path, prefix))
    return out


def check_actions(statuses: Sequence[str]) -> list[dict[str, str]]:
    """The check run's ``actions`` (GitHub: at most 3; label/identifier <= 20, description
    <= 40 characters) for the plans' statuses: Retry when one ended retryable, Cancel while
    one is running or paused."""
    actions = []
    if any(s in RETRY_STATES for s in statuses):
        actions.append(
            {
                "label": "Retry",
                "identifier": "retry",
                "description": "Re-run the failed or paused plan",
            }
        )
    if any(s in CANCEL_STATES for s in statuses):
        actions.append(
            {
                "label": "Cancel",
                "identifier": "cancel",
                "description": "Stop the run and undo what it changed",
            }
        )
    return actions
