"""Signing backends for approval attestations (adapters; the core sees only the ports).

- ``local_key``: ECDSA P-256 DSSE envelopes (self-hosted, private repos, local default, tests)
- ``sigstore_backend``: keyless sigstore bundles wrapping a DSSE envelope (GitHub Actions)

``verify_signed_document`` is the signature step: it recognises the stored document (a bare DSSE
envelope or a sigstore bundle), verifies it against ``Trust`` and returns the payload and its
signer. sigstore is imported only when a bundle is actually verified.
"""

from __future__ import annotations

import json

from app.errors import AttestationError
from app.signing.base import (
    GITHUB_ACTIONS_ISSUER,
    SignatureVerifier,
    SignedPayload,
    Signer,
    SignerRef,
    Trust,
    TrustedIdentity,
    TrustedKey,
    github_workflow_identity,
    key_id,
    trust_from_policy,
)
from app.signing.dsse import INTOTO_PAYLOAD_TYPE, Envelope, Signature, pae
from app.signing.local_key import LocalKeyVerifier

__all__ = [
    "GITHUB_ACTIONS_ISSUER",
    "INTOTO_PAYLOAD_TYPE",
    "Envelope",
    "Signature",
    "SignatureVerifier",
    "SignedPayload",
    "Signer",
    "SignerRef",
    "Trust",
    "TrustedIdentity",
    "TrustedKey",
    "document_kind",
    "github_workflow_identity",
    "key_id",
    "pae",
    "trust_from_policy",
    "verify_signed_document",
]

_LOCAL = LocalKeyVerifier()
_BUNDLE_MEDIA_PREFIX = "application/vnd.dev.sigstore.bundle"


def _parse(document: bytes, source: str) -> object:
    try:
        return json.loads(document)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AttestationError(
            f"{source}: not JSON ({exc})",
            check="format",
            hint="pass the attestation file written by `plangate attest`",
        ) from exc


def _kind(data: object, source: str) -> str:
    if isinstance(data, dict) and str(data.get("mediaType", "")).startswith(_BUNDLE_MEDIA_PREFIX):
        return "sigstore"
    if isinstance(data, dict) and "payloadType" in data:
        return "dsse"
    raise AttestationError(
        f"{source}: neither a DSSE envelope nor a sigstore bundle",
        check="format",
        hint="pass the attestation file written by `plangate attest`",
    )


def document_kind(document: bytes, *, source: str = "attestation") -> str:
    """``"sigstore"`` for a sigstore bundle, ``"dsse"`` for a bare DSSE envelope."""
    return _kind(_parse(document, source), source)


def verify_signed_document(
    document: bytes,
    trust: Trust,
    *,
    source: str = "attestation",
    sigstore_verifier: SignatureVerifier | None = None,
) -> SignedPayload:
    """The signature step for either backend; raises ``AttestationError`` on any failure."""
    if trust.empty:
        raise AttestationError(
            f"{source}: no trusted signers are configured, so nothing can be verified",
            check="signer",
            hint="list trusted signing keys or sigstore identities in the default branch's "
            "policy (or the executor's configuration)",
        )
    # A DSSE envelope has exactly payload/payloadType/signatures (base64 payload), so the key
    # "mediaType" can only mean a sigstore bundle; each branch then validates fully (the
    # envelope in one pydantic-core pass, which is the hot path of the executor's check).
    if b'"mediaType"' in document:
        if _kind(_parse(document, source), source) != "sigstore":
            raise AttestationError(
                f"{source}: unknown document type", check="format", hint="see `plangate attest`"
            )
        if sigstore_verifier is None:
            from app.signing.sigstore_backend import SigstoreVerifier

            sigstore_verifier = SigstoreVerifier()
        return sigstore_verifier.verify(document, trust)
    envelope = Envelope.from_json(document, source=source)
    return _LOCAL.verify_envelope(envelope, trust, source=source)
