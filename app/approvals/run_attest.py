"""The run attestation: an in-toto Statement v1 saying *what ran* for a plan digest.

The approval attestation says who approved a plan digest; this one, signed by the executor at
the end of every run (any terminal status), says what then happened: which steps ran with which
outcome and how many attempts, which compensations ran, the usage, and the run (correlation)
id. It names the approval it ran under by the sha256 of the approval envelope's exact bytes, so
"who approved" and "what ran" can be verified together and tied to each other.

Pure core: values in, values out (times are passed in, signing goes through the ``Signer`` port,
no I/O). Shape (documented in docs/attestations.md)::

    {"_type": "https://in-toto.io/Statement/v1",
     "subject": [{"name": "plans/db.yaml", "digest": {"sha256": "<plan digest hex>"}}],
     "predicateType": "https://plangate.dev/attestations/run/v1",
     "predicate": {"planId": ..., "runId": ..., "status": ..., "reason": ...,
                   "correlationId": <run id>,
                   "approvalDigest": "sha256:<hex of the approval envelope bytes>" | null,
                   "steps": [{"id", "status", "attempts"}], "compensations": [...],
                   "usage": {...}, "startedAt": "...Z", "finishedAt": "...Z",
                   "invocation": {"kind": "local" | "github-actions", ...} (optional)}}

The payload is RFC 8785 canonical JSON (``app.plan.digest.canonical_json``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.approvals.attest import INTOTO_PAYLOAD_TYPE, STATEMENT_TYPE, DigestSet, storage_path
from app.errors import AttestationError
from app.plan.digest import canonical_json

if TYPE_CHECKING:  # the port only: signing backends are adapters, chosen at the edge
    from app.signing.base import Signer, SignerRef

__all__ = [
    "RUN_PREDICATE_TYPE",
    "CompensationRecord",
    "RunPredicate",
    "RunStatement",
    "RunSubject",
    "StepRecord",
    "VerifiedRun",
    "approval_digest",
    "build_run_statement",
    "check_run_statement",
    "parse_run_statement",
    "run_attestation_path",
    "run_storage_path",
    "sign_run_statement",
    "statement_from_result",
]

#: versioned like the approval predicate: a breaking change gets ``/v2``
RUN_PREDICATE_TYPE = "https://plangate.dev/attestations/run/v1"

_SHA256_PATTERN = r"^sha256:[0-9a-f]{64}$"
#: run ids become part of a file name: keep them to a safe alphabet
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _utc_z(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class RunSubject(_Model):
    name: str = Field(min_length=1, description="the plan's path in the repository")
    digest: DigestSet


class StepRecord(_Model):
    id: str
    status: str
    attempts: int = Field(ge=0)


class CompensationRecord(_Model):
    step: str
    status: str
    action: str | None = None
    attempts: int = Field(0, ge=0)
    error: str | None = None


class RunPredicate(_Model):
    plan_id: str = Field(alias="planId")
    run_id: str = Field(alias="runId", pattern=_RUN_ID.pattern)
    #: the correlation id on every audit event, log line and action request of the run (today
    #: the run id itself; named separately so a consumer never has to know that)
    correlation_id: str | None = Field(None, alias="correlationId")
    status: str
    reason: str = ""
    approval_digest: str | None = Field(None, alias="approvalDigest", pattern=_SHA256_PATTERN)
    steps: tuple[StepRecord, ...]
    compensations: tuple[CompensationRecord, ...] = ()
    usage: dict[str, Any] = Field(default_factory=dict)
    started_at: str = Field(alias="startedAt")
    finished_at: str = Field(alias="finishedAt")
    #: where it ran: ``{"kind": "local"}`` or ``{"kind": "github-actions", "repository",
    #: "workflowRun", "commit", "pullRequest"}`` (informational; the signer is the identity)
    invocation: dict[str, Any] | None = None


class RunStatement(_Model):
    type_: Literal["https://in-toto.io/Statement/v1"] = Field(STATEMENT_TYPE, alias="_type")
    subject: tuple[RunSubject, ...] = Field(min_length=1, max_length=1)
    predicate_type: Literal["https://plangate.dev/attestations/run/v1"] = Field(
        RUN_PREDICATE_TYPE, alias="predicateType"
    )
    predicate: RunPredicate

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    def payload(self) -> bytes:
        """The exact bytes to sign: RFC 8785 canonical JSON."""
        return canonical_json(self.to_json_dict())


def approval_digest(envelope: bytes) -> str:
    """``sha256:<hex>`` of the approval attestation document exactly as stored."""
    return "sha256:" + hashlib.sha256(envelope).hexdigest()


def build_run_statement(
    *,
    plan_path: str,
    plan_digest: str,
    plan_id: str,
    run_id: str,
    status: str,
    reason: str,
    steps: Sequence[StepRecord],
    compensations: Sequence[CompensationRecord],
    usage: dict[str, Any],
    started_at: datetime,
    finished_at: datetime,
    approval: str | None,
    invocation: dict[str, Any] | None = None,
) -> RunStatement:
    """Build (and so validate) a run statement. ``approval`` is ``approval_digest(...)`` of the
    approval document the run was gated on, or None when none was verified (nothing mutating
    was left to run, the run was refused, or ``--unsafe-no-approval``)."""
    if finished_at < started_at:
        raise ValueError("a run cannot finish before it started")
    return RunStatement(
        subject=(RunSubject(name=plan_path, digest=DigestSet(sha256=plan_digest)),),
        predicate=RunPredicate(
            planId=plan_id,
            runId=run_id,
            correlationId=run_id,
            status=status,
            reason=reason,
            approvalDigest=approval,
            steps=tuple(steps),
            compensations=tuple(compensations),
            usage=dict(usage),
            startedAt=_utc_z(started_at),
            finishedAt=_utc_z(finished_at),
            invocation=invocation,
        ),
    )


def statement_from_result(
    result: Any,
    *,
    plan_path: str,
    started_at: datetime,
    finished_at: datetime,
    approval: str | None,
    invocation: dict[str, Any] | None = None,
) -> RunStatement:
    """The statement for an ``app.execute.result.RunResult`` (duck-typed: the core does not
    import the executor). Steps are listed in the result's (plan) order."""
    return build_run_statement(
        plan_path=plan_path,
        plan_digest=result.plan_digest,
        plan_id=result.plan_id,
        run_id=result.run_id,
        status=result.status,
        reason=result.reason,
        steps=[
            StepRecord(id=s.step_id, status=s.status, attempts=s.attempts)
            for s in result.steps.values()
        ],
        compensations=[
            CompensationRecord(
                step=c.step_id, status=c.status, action=c.action, attempts=c.attempts, error=c.error
            )
            for c in result.compensations
        ],
        usage=result.usage,
        started_at=started_at,
        finished_at=finished_at,
        approval=approval,
        invocation=invocation,
    )


def sign_run_statement(statement: RunStatement, signer: Signer) -> bytes:
    """The signed document (a DSSE envelope, or a sigstore bundle for the keyless backend)."""
    return signer.sign(INTOTO_PAYLOAD_TYPE, statement.payload())


def run_attestation_path(plan_digest: str, run_id: str, kind: str = "dsse") -> str:
    """Path under the attestation directory, beside the approval:
    ``local/<plan digest hex>.run-<run id>.<kind>.json``."""
    if not _RUN_ID.match(run_id):
        raise ValueError(f"run id {run_id!r} is not usable in a file name")
    if kind not in ("dsse", "sigstore"):
        raise ValueError(f"unknown attestation kind {kind!r}")
    hex_digest = DigestSet(sha256=plan_digest).sha256
    return f"local/{hex_digest}.run-{run_id}.{kind}.json"


def run_storage_path(pr_number: int, head_sha: str, run_id: str, kind: str) -> str:
    """Path on the attestation branch, beside the approval of the same pull request head:
    ``pr-<N>/<head-sha>.run-<run id>.<kind>.json``; the approval is ``<head-sha>.<kind>.json``.
    """
    if not _RUN_ID.match(run_id):
        raise ValueError(f"run id {run_id!r} is not usable in a file name")
    approval = storage_path(pr_number, head_sha, kind)
    return approval.removesuffix(f".{kind}.json") + f".run-{run_id}.{kind}.json"


# --- verification (pure: the signature step is done by the caller, see run_verify.py) -------

_RETRY_HINT = "the run attestation is not valid for this plan: do not rely on it"


@dataclass(frozen=True, slots=True)
class VerifiedRun:
    """A run statement that passed every check, who signed it, and what it is bound to."""

    statement: RunStatement
    signer: SignerRef
    #: the approval document's digest it names, when the caller had that document to compare
    approval_checked: bool

    @property
    def predicate(self) -> RunPredicate:
        return self.statement.predicate

    def summary(self) -> str:
        p = self.predicate
        steps = p.steps
        done = sum(1 for s in steps if s.status in ("succeeded", "skipped"))
        bound = (
            f"bound to approval {p.approval_digest}"
            + (" (checked)" if self.approval_checked else "")
            if p.approval_digest
            else "no approval recorded"
        )
        return (
            f"{self.statement.subject[0].name}: run {p.run_id} verified: status {p.status}, "
            f"{done}/{len(steps)} steps done, {len(p.compensations)} compensation(s), {bound}; "
            f"signed by {self.signer.describe()}; {p.started_at} .. {p.finished_at}"
        )


def parse_run_statement(payload_type: str, payload: bytes, *, source: str) -> RunStatement:
    """Signed bytes -> a valid ``RunStatement`` (raises ``AttestationError``)."""
    if payload_type != INTOTO_PAYLOAD_TYPE:
        raise AttestationError(
            f"{source}: payload type is {payload_type!r}, expected {INTOTO_PAYLOAD_TYPE!r}",
            check="payload_type",
            hint=_RETRY_HINT,
        )
    try:
        return RunStatement.model_validate_json(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise AttestationError(
            f"{source}: not a Plangate run statement ({RUN_PREDICATE_TYPE}): {where}: "
            f"{first['msg']}",
            check="statement",
            hint=_RETRY_HINT,
        ) from exc


def check_run_statement(
    statement: RunStatement,
    *,
    plan_path: str | None,
    plan_digest: str,
    approval_document: bytes | None,
    run_id: str | None = None,
    source: str,
) -> bool:
    """The binding checks: this plan digest (and path), this run, this approval.

    ``approval_document`` is the approval attestation exactly as stored: when given, the run
    must name its digest (a run that recorded no approval, or another one, is refused). Returns
    whether the approval binding was checked.
    """
    subject = statement.subject[0]
    if "sha256:" + subject.digest.sha256 != plan_digest:
        raise AttestationError(
            f"{source}: the run attestation is for plan digest sha256:{subject.digest.sha256}, "
            f"not {plan_digest}",
            check="digest",
            hint="the plan changed since that run; each plan digest has its own runs",
        )
    if plan_path is not None and subject.name != plan_path:
        raise AttestationError(
            f"{source}: the run attestation names plan {subject.name!r}, not {plan_path!r}",
            check="subject",
            hint="verify the plan at the path it ran from",
        )
    if run_id is not None and statement.predicate.run_id != run_id:
        raise AttestationError(
            f"{source}: the run attestation is for run {statement.predicate.run_id!r}, "
            f"not {run_id!r}",
            check="run",
        )
    if approval_document is None:
        return False
    expected = approval_digest(approval_document)
    recorded = statement.predicate.approval_digest
    if recorded != expected:
        raise AttestationError(
            f"{source}: the run names approval {recorded or '(none)'}, but the approval "
            f"attestation for this plan digest is {expected}",
            check="approval",
            hint="the run was not gated on this approval (or the approval was replaced); "
            "compare the approval history on the attestation branch",
        )
    return True
