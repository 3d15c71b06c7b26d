"""The approval attestation: an in-toto Statement v1 with Plangate's approval predicate.

Pure core: values in, values out. No clock (``evaluated_at`` is passed in), no signing, no I/O.
Signing is the job of ``app.signing`` backends; verification of a signed statement is
``app.approvals.verify``.

Shape (documented in docs/attestations.md)::

    {"_type": "https://in-toto.io/Statement/v1",
     "subject": [{"name": "plans/db.yaml",
                  "digest": {"sha256": "<plan digest hex>"},
                  "annotations": {"gitBlob": "<blob sha>"}}],
     "predicateType": "https://plangate.dev/attestations/approval/v1",
     "predicate": {"repository": {...}, "pullRequest": {...}, "base": {...}, "headSha": ...,
                   "approvers": [...], "policyDigest": "sha256:...", "risk": {...},
                   "cost": {...}, "evaluatedAt": "...Z", "expiresAt": "...Z"}}

Note that ``digest.sha256`` is the *plan digest* (sha256 over the plan's RFC 8785 canonical
JSON, see ``app.plan.digest``), not the hash of the file bytes: reviewers approve what the plan
does, and formatting changes do not invalidate approvals. ``annotations.gitBlob`` records the
exact bytes (see ``SubjectAnnotations`` for why it is not in ``digest``).

The models check their invariants when built (the in-toto and SLSA habit: an invalid statement
cannot exist), so a parsed statement is a valid one. Learned from the in-toto ``human-review``
draft predicate and SLSA source track's two-party review: who reviewed, what exactly (commit +
digest), when, and under which policy.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    model_validator,
)

__all__ = [
    "APPROVAL_PREDICATE_TYPE",
    "INTOTO_PAYLOAD_TYPE",
    "STATEMENT_TYPE",
    "ApprovalPredicate",
    "ApprovalStatement",
    "Approver",
    "BaseRef",
    "CostEstimate",
    "DigestSet",
    "PlanSubject",
    "PullRequestRef",
    "RepositoryRef",
    "Risk",
    "SubjectAnnotations",
    "build_statement",
    "local_attestation_path",
    "storage_path",
]

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
#: versioned: a breaking change to the predicate gets ``/v2``; verifiers accept only what they know
APPROVAL_PREDICATE_TYPE = "https://plangate.dev/attestations/approval/v1"
#: DSSE payload type of in-toto statements (same value as ``app.signing.dsse``)
INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"

_GIT_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")  # SHA-1 or SHA-256 repositories
#: patterns are checked by pydantic-core (Rust), not Python: parsing is the executor's hot path
_GIT_SHA_PATTERN = _GIT_SHA.pattern
_HEX64_PATTERN = r"^[0-9a-f]{64}$"
_REPO_PATTERN = r"^(?:local|[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+)$"
_LOGIN_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}(?:\[bot\])?$"


_ZERO = timedelta(0)


def _utc(value: datetime) -> datetime:
    if not value.microsecond and value.utcoffset() == _ZERO:
        return value  # the common case (every parsed statement): already whole-second UTC
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("must be a timezone-aware time (UTC)")
    # whole seconds: the statement is canonical JSON and round-trips exactly
    return value.astimezone(UTC).replace(microsecond=0)


def _git_sha(value: str) -> str:
    if not _GIT_SHA.match(value):
        raise ValueError("must be a full lowercase git object id (40 or 64 hex characters)")
    return value


def _strip_sha256_prefix(value: object) -> object:
    return value.removeprefix("sha256:") if isinstance(value, str) else value


#: whole-second UTC; pydantic-core writes it as ``2026-11-25T12:00:00Z``
UtcTime = Annotated[datetime, AfterValidator(_utc)]
GitSha = Annotated[str, Field(pattern=_GIT_SHA_PATTERN)]


def _repo_path(value: str) -> str:
    """Subject names are repository-relative POSIX paths: no absolute, ``..`` or backslashes."""
    if (
        not value
        or value.startswith("/")
        or "\\" in value
        or any(part in ("", ".", "..") for part in value.split("/"))
    ):
        raise ValueError(f"{value!r} is not a repository-relative path like 'plans/db.yaml'")
    return value


class _Model(BaseModel):
    """Frozen, strict about unknown keys.

    Every model declares its fields **in the order of their JSON names** (byte order, e.g.
    ``approvedAt, commit, login, requirement, reviewId``). pydantic-core then writes JSON whose
    keys are already sorted, which with compact separators is exactly RFC 8785 for our value
    space, so ``payload()`` needs no re-encoding (``test_payload_is_rfc8785`` pins this).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class DigestSet(_Model):
    """``sha256`` = the plan digest hex (sha256 over the plan's canonical JSON)."""

    sha256: Annotated[str, BeforeValidator(_strip_sha256_prefix), Field(pattern=_HEX64_PATTERN)] = (
        Field(description="the plan digest, 64 lowercase hex characters")
    )


class SubjectAnnotations(_Model):
    """Extra facts about a subject that are not its identity.

    The git blob id binds the exact file bytes. It would naturally be a ``gitBlob`` entry of
    ``digest`` (the in-toto DigestSet allows it), but sigstore-python 4.5.1's ``Statement``
    accepts only sha2/sha3 digest keys and refuses to sign such a statement, so it lives in the
    ResourceDescriptor's ``annotations`` to keep one format for both signing backends.
    """

    git_blob: GitSha | None = Field(None, alias="gitBlob")


class PlanSubject(_Model):
    annotations: SubjectAnnotations | None = None
    digest: DigestSet
    name: Annotated[str, AfterValidator(_repo_path)]


class RepositoryRef(_Model):
    """The repository the approval happened in: ``owner/name`` plus GitHub's immutable id."""

    id: int | None = Field(None, ge=1, description="GitHub repository id (survives renames)")
    name: str = Field(pattern=_REPO_PATTERN, description="'owner/name', or 'local'")
    url: str | None = None


class PullRequestRef(_Model):
    number: int = Field(ge=1)
    url: str = Field(min_length=1)


class BaseRef(_Model):
    ref: str = Field(min_length=1, description="e.g. refs/heads/main")
    sha: GitSha


class Approver(_Model):
    """One counted approval: who, which review, on which commit, when, for which requirement."""

    approved_at: UtcTime = Field(alias="approvedAt")
    commit: GitSha | None = None
    login: str = Field(pattern=_LOGIN_PATTERN, description="GitHub login")
    requirement: str = Field(min_length=1, description="id of the requirement it satisfied")
    review_id: int | None = Field(None, alias="reviewId", ge=1)


class Risk(_Model):
    level: str | None = None
    score: int = Field(ge=0)


class CostEstimate(_Model):
    """Estimated plan cost; money as an exact decimal string (never a float)."""

    currency: str = Field("USD", pattern=r"^[A-Z]{3}$")
    total: Annotated[Decimal, PlainSerializer(lambda v: format(v, "f"), return_type=str)] = Field(
        ge=0
    )


class ApprovalPredicate(_Model):
    approvers: tuple[Approver, ...] = ()
    base: BaseRef | None = None
    cost: CostEstimate | None = None
    evaluated_at: UtcTime = Field(alias="evaluatedAt")
    expires_at: UtcTime = Field(alias="expiresAt")
    head_sha: GitSha | None = Field(None, alias="headSha")
    policy_digest: str = Field(alias="policyDigest", pattern=r"^sha256:[0-9a-f]{64}$")
    pull_request: PullRequestRef | None = Field(None, alias="pullRequest")
    repository: RepositoryRef
    risk: Risk | None = None

    @model_validator(mode="after")
    def _invariants(self) -> ApprovalPredicate:
        if self.expires_at <= self.evaluated_at:
            raise ValueError("expiresAt must be after evaluatedAt")
        if self.pull_request is not None:
            if self.base is None or self.head_sha is None:
                raise ValueError("a pull-request approval needs base and headSha")
            suffix = f"/{self.repository.name}/pull/{self.pull_request.number}"
            if not self.pull_request.url.lower().endswith(suffix.lower()):
                raise ValueError(
                    f"pullRequest.url {self.pull_request.url!r} is not PR "
                    f"#{self.pull_request.number} of {self.repository.name}"
                )
            for approver in self.approvers:
                if approver.review_id is None or approver.commit is None:
                    raise ValueError(
                        f"approver {approver.login}: a pull-request approval names its review "
                        "id and commit"
                    )
        seen: set[tuple[str, str]] = set()
        for approver in self.approvers:
            key = (approver.login.lower(), approver.requirement)
            if key in seen:
                raise ValueError(f"approver {approver.login} listed twice for {key[1]}")
            seen.add(key)
            if approver.approved_at > self.evaluated_at:
                raise ValueError(f"approver {approver.login}: approvedAt is after evaluatedAt")
        return self


class ApprovalStatement(_Model):
    type_: Literal["https://in-toto.io/Statement/v1"] = Field(STATEMENT_TYPE, alias="_type")
    predicate: ApprovalPredicate
    predicate_type: Literal["https://plangate.dev/attestations/approval/v1"] = Field(
        APPROVAL_PREDICATE_TYPE, alias="predicateType"
    )
    subject: tuple[PlanSubject, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_subjects(self) -> ApprovalStatement:
        names = [s.name for s in self.subject]
        if len(set(names)) != len(names):
            raise ValueError("each plan file appears once in subject")
        return self

    def to_json_dict(self) -> dict[str, object]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def payload(self) -> bytes:
        """The exact bytes to sign: RFC 8785 canonical JSON (stable across runs and machines).

        Written by pydantic-core directly: fields are declared in sorted JSON-name order (see
        ``_Model``), output is compact UTF-8, and a statement holds only ASCII keys, strings
        and safe integers (money is a decimal string, never a float) -- the value space where
        that is JCS. ~5x faster than re-encoding with the pure-Python ``rfc8785``, which
        matters because signing cost is dominated by serialisation, not ECDSA.
        """
        return self.model_dump_json(by_alias=True, exclude_none=True).encode("utf-8")

    def subject_for(self, path: str) -> PlanSubject | None:
        return next((s for s in self.subject if s.name == path), None)


def build_statement(
    *,
    plans: Sequence[tuple[str, str, str | None]],
    repository: RepositoryRef,
    approvers: Sequence[Approver],
    policy_digest: str,
    evaluated_at: datetime,
    ttl: timedelta,
    pull_request: PullRequestRef | None = None,
    base: BaseRef | None = None,
    head_sha: str | None = None,
    risk: Risk | None = None,
    cost: CostEstimate | None = None,
) -> ApprovalStatement:
    """Build (and so validate) an approval statement.

    ``plans`` are ``(repo path, plan digest "sha256:<hex>", git blob sha or None)``, sorted by
    path so the payload does not depend on discovery order. ``ttl`` bounds how long after the
    evaluation the executor still accepts the approval.
    """
    if ttl <= timedelta(0):
        raise ValueError("ttl must be positive")
    evaluated = _utc(evaluated_at)
    subjects = tuple(
        PlanSubject(
            name=path,
            digest=DigestSet(sha256=digest),
            annotations=None if blob is None else SubjectAnnotations(gitBlob=blob),
        )
        for path, digest, blob in sorted(plans)
    )
    return ApprovalStatement(
        subject=subjects,
        predicate=ApprovalPredicate(
            repository=repository,
            pullRequest=pull_request,
            base=base,
            headSha=head_sha,
            approvers=tuple(approvers),
            policyDigest=policy_digest,
            risk=risk,
            cost=cost,
            evaluatedAt=evaluated,
            expiresAt=evaluated + ttl,
        ),
    )


def storage_path(pr_number: int, head_sha: str, kind: str) -> str:
    """Path on the bot-only ``plangate-attestations`` branch: ``pr-<N>/<head-sha>.<kind>.json``."""
    _git_sha(head_sha)
    if kind not in ("dsse", "sigstore"):
        raise ValueError(f"unknown attestation kind {kind!r}")
    return f"pr-{pr_number}/{head_sha}.{kind}.json"


def local_attestation_path(plan_digest: str, kind: str = "dsse") -> str:
    """Path (under the attestation directory) of a local approval, keyed by plan digest."""
    hex_digest = DigestSet(sha256=plan_digest).sha256
    return f"local/{hex_digest}.{kind}.json"
