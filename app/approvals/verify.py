"""Verify an approval attestation before anything mutates: the executor's gate.

One path for both signing backends: the signature step (``app.signing``) establishes *who*
signed and yields the payload; every check after that is backend-independent and pure.

Checks, in order (``AttestationError.check`` names the one that failed):

==============  ===========================================================================
``format``      the stored document is a DSSE envelope or a sigstore bundle
``signer``      it is signed by a key / sigstore identity listed in ``Trust``
``signature``   the signature verifies (nothing was changed after signing)
``payload_type``  the envelope carries an in-toto statement
``statement``   the statement is a valid Plangate approval (known, versioned predicateType)
``subject``     this plan file is one of the attested subjects (not replayed from another plan)
``digest``      its digest equals the plan as it stands now (e.g. in the merge commit)
``repository``  the approval was given in this repository (not replayed from another repo)
``pull_request``  ...on the pull request that was merged (not replayed from another PR)
``head_sha``    ...at the head commit that was merged (when the caller knows it)
``policy``      under the policy in force (same digest, or the current policy accepts it)
``expiry``      now is within [evaluatedAt - skew, expiresAt)
==============  ===========================================================================

``Trust`` must come from the default branch's policy or the executor's configuration, never from
the pull request. ``now`` is passed in: this module reads no clock and no environment.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import ValidationError

from app.approvals.attest import (
    APPROVAL_PREDICATE_TYPE,
    INTOTO_PAYLOAD_TYPE,
    ApprovalStatement,
)
from app.errors import AttestationError
from app.signing import SignatureVerifier, SignerRef, Trust, verify_signed_document

__all__ = [
    "CHECKS",
    "VerifiedApproval",
    "check_statement",
    "parse_statement",
    "verify_for_execution",
]

CHECKS = (
    "format",
    "signer",
    "signature",
    "payload_type",
    "statement",
    "subject",
    "digest",
    "repository",
    "pull_request",
    "head_sha",
    "policy",
    "expiry",
)

#: tolerated clock difference between the signer and the verifier
DEFAULT_CLOCK_SKEW = timedelta(minutes=5)

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_REAPPROVE = "get the plan approved again on its pull request (a new attestation is made then)"


@dataclass(frozen=True, slots=True)
class VerifiedApproval:
    """A statement that passed every check, and who signed it."""

    statement: ApprovalStatement
    signer: SignerRef
    plan_path: str
    plan_digest: str

    @property
    def approvers(self) -> tuple[str, ...]:
        return tuple(a.login for a in self.statement.predicate.approvers)

    def summary(self) -> str:
        pred = self.statement.predicate
        pr = f" PR #{pred.pull_request.number}" if pred.pull_request else ""
        who = (
            ", ".join(f"{a.login} ({a.requirement})" for a in pred.approvers)
            or "(no approvers: policy required none)"
        )
        return (
            f"{self.plan_path}: attestation verified: {pred.repository.name}{pr}, "
            f"plan digest {self.plan_digest}, approved by {who}; signed by "
            f"{self.signer.describe()}; expires {pred.expires_at:%Y-%m-%dT%H:%M:%SZ}"
        )


def _digest_hex(plan_digest: str) -> str:
    """``sha256:<hex>`` or ``<hex>`` -> ``<hex>``; anything else is a caller bug."""
    hex_digest = plan_digest.removeprefix("sha256:")
    if not _HEX64.match(hex_digest):
        raise ValueError(f"plan digest {plan_digest!r} is not sha256:<64 hex>")
    return hex_digest


def parse_statement(payload_type: str, payload: bytes, *, source: str) -> ApprovalStatement:
    """Signed bytes → a valid ``ApprovalStatement`` (``payload_type``/``statement`` checks)."""
    if payload_type != INTOTO_PAYLOAD_TYPE:
        raise AttestationError(
            f"{source}: payload type is {payload_type!r}, expected {INTOTO_PAYLOAD_TYPE!r}",
            check="payload_type",
            hint="this is not an in-toto attestation; " + _REAPPROVE,
        )
    try:
        # fast path: pydantic-core parses and validates in one go
        return ApprovalStatement.model_validate_json(payload)
    except ValidationError as exc:
        error = exc
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AttestationError(
            f"{source}: the signed payload is not JSON", check="statement", hint=_REAPPROVE
        ) from exc
    predicate_type = data.get("predicateType") if isinstance(data, dict) else None
    if predicate_type != APPROVAL_PREDICATE_TYPE:
        raise AttestationError(
            f"{source}: predicateType is {predicate_type!r}, expected {APPROVAL_PREDICATE_TYPE!r}",
            check="statement",
            hint="only Plangate approval attestations authorise a plan; " + _REAPPROVE,
        ) from error
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    raise AttestationError(
        f"{source}: invalid approval statement: {where}: {first['msg']}",
        check="statement",
        hint=_REAPPROVE,
    ) from error


def check_statement(
    statement: ApprovalStatement,
    *,
    plan_path: str,
    plan_digest: str,
    expected_repo: str,
    expected_pr: int | None,
    now: datetime,
    expected_repo_id: int | None = None,
    expected_head_sha: str | None = None,
    expected_policy_digest: str | None = None,
    policy_accepts: Callable[[ApprovalStatement], bool] | None = None,
    clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
    source: str = "attestation",
) -> None:
    """The backend-independent checks on a statement whose signature already verified."""
    pred = statement.predicate
    subject = statement.subject_for(plan_path)
    if subject is None:
        raise AttestationError(
            f"{source}: attests {', '.join(s.name for s in statement.subject)}, not {plan_path}",
            check="subject",
            hint="an approval of one plan never authorises another; use the attestation made "
            f"for {plan_path}, or get it approved",
        )
    want = _digest_hex(plan_digest)
    if subject.digest.sha256 != want:
        raise AttestationError(
            f"{source}: {plan_path} was approved with digest sha256:{subject.digest.sha256}, "
            f"but the plan now has sha256:{want}",
            check="digest",
            hint="the plan changed after it was approved; " + _REAPPROVE,
        )
    if pred.repository.name.lower() != expected_repo.lower() or (
        expected_repo_id is not None
        and pred.repository.id is not None
        and pred.repository.id != expected_repo_id
    ):
        raise AttestationError(
            f"{source}: approval was given in repository {pred.repository.name}"
            f"{f' (id {pred.repository.id})' if pred.repository.id else ''}, not {expected_repo}",
            check="repository",
            hint="attestations are bound to their repository; approve the plan in this one",
        )
    if expected_pr is not None and (
        pred.pull_request is None or pred.pull_request.number != expected_pr
    ):
        got = f"PR #{pred.pull_request.number}" if pred.pull_request else "no pull request"
        raise AttestationError(
            f"{source}: approval belongs to {got}, but the merged pull request is #{expected_pr}",
            check="pull_request",
            hint="an approval on one pull request never authorises another; approve PR "
            f"#{expected_pr}",
        )
    if expected_head_sha is not None and pred.head_sha != expected_head_sha:
        raise AttestationError(
            f"{source}: approval is for head commit {pred.head_sha}, but {expected_head_sha} "
            "was merged",
            check="head_sha",
            hint="commits were pushed after the approval; " + _REAPPROVE,
        )
    policy_changed = (
        expected_policy_digest is not None and pred.policy_digest != expected_policy_digest
    )
    if policy_changed and (policy_accepts is None or not policy_accepts(statement)):
        raise AttestationError(
            f"{source}: approved under policy {pred.policy_digest}, but the policy in force "
            f"is {expected_policy_digest} and does not accept the recorded approvals",
            check="policy",
            hint="the approval rules changed since the review; get the approvals the "
            "current policy requires",
        )
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if now >= pred.expires_at:
        raise AttestationError(
            f"{source}: approval expired at {pred.expires_at:%Y-%m-%dT%H:%M:%SZ}",
            check="expiry",
            hint="approvals are valid for a limited time; " + _REAPPROVE,
        )
    if now + clock_skew < pred.evaluated_at:
        raise AttestationError(
            f"{source}: approval is dated {pred.evaluated_at:%Y-%m-%dT%H:%M:%SZ}, in the future",
            check="expiry",
            hint="check the clocks of the signing and verifying machines",
        )


def verify_for_execution(
    plan_path: str,
    plan_digest: str,
    envelope_bytes: bytes,
    trust: Trust,
    expected_repo: str,
    expected_pr: int | None,
    now: datetime,
    *,
    expected_repo_id: int | None = None,
    expected_head_sha: str | None = None,
    expected_policy_digest: str | None = None,
    policy_accepts: Callable[[ApprovalStatement], bool] | None = None,
    clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
    sigstore_verifier: SignatureVerifier | None = None,
    source: str = "attestation",
) -> VerifiedApproval:
    """Everything the executor needs before the first mutating step of ``plan_path``.

    ``plan_digest`` is computed by the caller from the plan *as it stands in the merge commit*
    (so merge, squash and rebase merges all work); ``trust`` comes from the default branch's
    policy or executor config. ``expected_pr=None`` skips the PR binding (local plans only).
    Returns a ``VerifiedApproval`` or raises ``AttestationError`` naming the failed check.
    """
    signed = verify_signed_document(
        envelope_bytes, trust, source=source, sigstore_verifier=sigstore_verifier
    )
    statement = parse_statement(signed.payload_type, signed.payload, source=source)
    check_statement(
        statement,
        plan_path=plan_path,
        plan_digest=plan_digest,
        expected_repo=expected_repo,
        expected_pr=expected_pr,
        now=now,
        expected_repo_id=expected_repo_id,
        expected_head_sha=expected_head_sha,
        expected_policy_digest=expected_policy_digest,
        policy_accepts=policy_accepts,
        clock_skew=clock_skew,
        source=source,
    )
    return VerifiedApproval(
        statement=statement,
        signer=signed.signer,
        plan_path=plan_path,
        plan_digest="sha256:" + _digest_hex(plan_digest),
    )
