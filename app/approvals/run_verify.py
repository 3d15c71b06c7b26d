"""Verify a run attestation: signature (either backend), then what it is bound to.

The signature step is ``app.signing.verify_signed_document`` (the same trust rules as approvals:
a trusted local key or a pinned sigstore identity); the binding checks are pure
(``app.approvals.run_attest.check_run_statement``): the plan digest and path, optionally the run
id, and the approval document the run must name. Used by ``plangate verify PLAN --run RUN`` and
by ``plangate execute`` right after storing (a stored attestation that does not verify is
reported, never trusted).
"""

from __future__ import annotations

from app.approvals.run_attest import VerifiedRun, check_run_statement, parse_run_statement
from app.signing import SignatureVerifier, Trust, verify_signed_document

__all__ = ["verify_run_attestation"]


def verify_run_attestation(
    document: bytes,
    trust: Trust,
    *,
    plan_digest: str,
    plan_path: str | None = None,
    approval_document: bytes | None = None,
    run_id: str | None = None,
    source: str = "run attestation",
    sigstore_verifier: SignatureVerifier | None = None,
) -> VerifiedRun:
    """Raises ``AttestationError`` naming the failed check (``signature``, ``signer``,
    ``statement``, ``digest``, ``subject``, ``run``, ``approval``)."""
    signed = verify_signed_document(
        document, trust, source=source, sigstore_verifier=sigstore_verifier
    )
    statement = parse_run_statement(signed.payload_type, signed.payload, source=source)
    checked = check_run_statement(
        statement,
        plan_path=plan_path,
        plan_digest=plan_digest,
        approval_document=approval_document,
        run_id=run_id,
        source=source,
    )
    return VerifiedRun(statement=statement, signer=signed.signer, approval_checked=checked)
