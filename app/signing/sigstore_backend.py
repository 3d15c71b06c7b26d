"""Keyless sigstore backend: sign in GitHub Actions, verify bundles offline.

Signing (``SigstoreSigner``) runs only inside a GitHub Actions workflow started from the default
branch (``workflow_dispatch``/``repository_dispatch`` sent by the app). It must never run in a
``pull_request_review`` (or any ``pull_request*``) workflow: that workflow file comes from the
PR's merge ref, which the PR author controls. ``check_signing_context`` refuses those events, and
the pinned identity (SAN ``https://github.com/<repo>/.github/workflows/<file>@refs/heads/<default>``)
would not match them anyway.

Verification (``SigstoreVerifier``) checks the bundle against a sigstore trusted root (by
default the one shipped in the sigstore wheel, so it works offline and reproducibly), pins the
certificate identity to ``Trust.identities`` and returns the DSSE payload. After that, keyless
and local-key attestations take the same path (``app.approvals.verify``).

Privacy: on the public-good instance, signing writes the repository, workflow and run into the
public Rekor log. Private repositories should use the local key backend.
"""

from __future__ import annotations

import importlib.resources
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jwt
import requests
from sigstore.errors import Error as SigstoreError
from sigstore.errors import VerificationError
from sigstore.models import Bundle, InvalidBundle, TrustedRoot
from sigstore.verify import Verifier
from sigstore.verify.policy import (
    AllOf,
    AnyOf,
    Identity,
    OIDCSourceRepositoryIdentifier,
    OIDCSourceRepositoryURI,
    VerificationPolicy,
)

from app.errors import AttestationError
from app.signing.base import SignedPayload, SignerRef, Trust, TrustedIdentity
from app.signing.dsse import INTOTO_PAYLOAD_TYPE

__all__ = [
    "PULL_REQUEST_EVENTS",
    "SigstoreSigner",
    "SigstoreVerifier",
    "bundled_trusted_root_path",
    "check_signing_context",
    "check_token_claims",
    "fetch_actions_id_token",
    "identity_policy",
]

#: workflow events whose workflow file (and so whose identity) the PR author controls
PULL_REQUEST_EVENTS = frozenset(
    {"pull_request", "pull_request_target", "pull_request_review", "pull_request_review_comment"}
)

_TUF_DIRS = {
    "production": "https%3A%2F%2Ftuf-repo-cdn.sigstore.dev",
    "staging": "https%3A%2F%2Ftuf-repo-cdn.sigstage.dev",
}

#: Fulcio certificate extension OIDs (https://github.com/sigstore/fulcio/blob/main/docs/oid-info.md)
_OID_ISSUER_V2 = "1.3.6.1.4.1.57264.1.8"
_OID_ISSUER_V1 = "1.3.6.1.4.1.57264.1.1"


def bundled_trusted_root_path(instance: str) -> Path:
    """The trusted root shipped inside the installed sigstore wheel (no network, pinned)."""
    try:
        directory = _TUF_DIRS[instance]
    except KeyError:
        raise ValueError(f"unknown sigstore instance {instance!r}") from None
    root = importlib.resources.files("sigstore") / "_store" / directory / "trusted_root.json"
    return Path(str(root))


# --- signing -------------------------------------------------------------------------------


def check_signing_context(*, event_name: str, ref: str, default_branch: str) -> None:
    """Refuse to sign anywhere but a default-branch run that is not a pull-request event."""
    if event_name in PULL_REQUEST_EVENTS:
        raise AttestationError(
            f"refusing to sign an approval in a {event_name!r} workflow run: its workflow file "
            "comes from the pull request, which its author controls",
            check="sign",
            hint="sign from a workflow_dispatch/repository_dispatch run on the default branch",
        )
    if ref != f"refs/heads/{default_branch}":
        raise AttestationError(
            f"refusing to sign from ref {ref!r}: approvals are signed only by the workflow on "
            f"refs/heads/{default_branch}",
            check="sign",
            hint="dispatch the approval workflow on the default branch",
        )


def check_token_claims(claims: Mapping[str, Any], expected: TrustedIdentity) -> None:
    """Check an Actions ID token before using it, so we never publish a useless signature.

    The token is not verified here (Fulcio verifies it); this only compares the claims GitHub
    documents (``event_name``, ``job_workflow_ref``, ``iss``) with the pinned identity.
    """
    event = str(claims.get("event_name", ""))
    if event in PULL_REQUEST_EVENTS:
        raise AttestationError(
            f"the OIDC token was issued to a {event!r} run; refusing to sign",
            check="sign",
            hint="sign from a workflow_dispatch/repository_dispatch run on the default branch",
        )
    if claims.get("iss") != expected.issuer:
        raise AttestationError(
            f"the OIDC token's issuer is {claims.get('iss')!r}, expected {expected.issuer!r}",
            check="sign",
            hint="sign from GitHub Actions with `permissions: id-token: write`",
        )
    workflow_ref = str(claims.get("job_workflow_ref", ""))
    if not workflow_ref or not expected.san.endswith("/" + workflow_ref):
        raise AttestationError(
            f"the OIDC token is for workflow {workflow_ref or '(none)'!r}, but verifiers trust "
            f"only {expected.san!r}",
            check="sign",
            hint="run the approval workflow named in the trusted identity, on the default branch",
        )


def fetch_actions_id_token(
    *,
    request_url: str,
    request_token: str,
    audience: str = "sigstore",
    session: requests.Session | None = None,
    timeout: float = 30.0,
) -> str:
    """Request a GitHub Actions OIDC ID token (``ACTIONS_ID_TOKEN_REQUEST_URL``/``_TOKEN``).

    The same request ``sigstore.oidc.detect_credential()`` makes, with the two values passed in
    (only ``app.settings``/the CLI read the environment) and a session that tests can mock.
    GitHub docs: "Configuring OpenID Connect in cloud providers" / "Requesting the JWT".
    """
    http = session or requests.Session()
    try:
        response = http.get(
            request_url,
            params={"audience": audience},
            headers={"Authorization": f"bearer {request_token}"},
            timeout=timeout,
        )
    except requests.RequestException as exc:
        raise AttestationError(
            f"could not request an Actions OIDC token: {exc}",
            check="sign",
            hint="retry the workflow; GitHub's token service may be unavailable",
        ) from exc
    if response.status_code != 200:
        raise AttestationError(
            f"Actions OIDC token request failed: HTTP {response.status_code}",
            check="sign",
            hint="give the job `permissions: id-token: write`",
        )
    try:
        value = response.json()["value"]
    except (ValueError, KeyError, TypeError) as exc:
        raise AttestationError("Actions OIDC token response has no 'value'", check="sign") from exc
    if not isinstance(value, str) or value.count(".") != 2:
        raise AttestationError("Actions OIDC token response is not a JWT", check="sign")
    return value


def unverified_claims(token: str) -> dict[str, Any]:
    """The token's claims, unverified (Fulcio verifies the token; we only pre-check)."""
    try:
        return jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise AttestationError(f"the OIDC token is malformed: {exc}", check="sign") from exc


class SigstoreSigner:
    """Keyless DSSE signing with sigstore-python (Fulcio certificate + Rekor entry).

    ``identity_token`` is the raw Actions OIDC token (``fetch_actions_id_token`` or
    ``sigstore.oidc.detect_credential()``); ``expected`` is the identity verifiers pin, checked
    against the token's claims before anything is sent. ``signing_context`` (a
    ``sigstore.sign.SigningContext``) defaults to the public-good instance named by
    ``instance`` and is injectable for tests. Network I/O happens only in ``sign``.
    """

    kind = "sigstore"

    def __init__(
        self,
        *,
        identity_token: str,
        expected: TrustedIdentity,
        instance: str = "production",
        signing_context: Any | None = None,
    ) -> None:
        check_token_claims(unverified_claims(identity_token), expected)
        self._token = identity_token
        self._instance = instance
        self._context = signing_context

    def _signing_context(self) -> Any:  # pragma: no cover - network (TUF refresh)
        from sigstore.models import ClientTrustConfig
        from sigstore.sign import SigningContext

        config = (
            ClientTrustConfig.staging()
            if self._instance == "staging"
            else ClientTrustConfig.production()
        )
        return SigningContext.from_trust_config(config)

    def sign(self, payload_type: str, payload: bytes) -> bytes:
        from sigstore.dsse import Statement
        from sigstore.oidc import IdentityToken

        if payload_type != INTOTO_PAYLOAD_TYPE:
            raise AttestationError(
                f"sigstore signs in-toto statements only, not {payload_type!r}", check="sign"
            )
        try:
            context = self._context or self._signing_context()
            with context.signer(IdentityToken(self._token)) as signer:
                bundle = signer.sign_dsse(Statement(payload))
        except SigstoreError as exc:
            raise AttestationError(
                f"sigstore signing failed: {exc}", check="sign", hint=exc.diagnostics()
            ) from exc
        return bundle.to_json().encode()


# --- verification --------------------------------------------------------------------------


def identity_policy(identities: tuple[TrustedIdentity, ...]) -> VerificationPolicy:
    """A sigstore policy accepting exactly the listed identities (fails closed when empty)."""
    if not identities:
        raise AttestationError(
            "no trusted sigstore identities are configured, so no keyless attestation can be "
            "accepted",
            check="signer",
            hint="list the approval workflow's identity under trusted signers in the default "
            "branch's policy",
        )
    alternatives: list[VerificationPolicy] = []
    for ident in identities:
        children: list[VerificationPolicy] = [Identity(identity=ident.san, issuer=ident.issuer)]
        if ident.repository_uri:
            children.append(OIDCSourceRepositoryURI(ident.repository_uri))
        if ident.repository_id:
            children.append(OIDCSourceRepositoryIdentifier(ident.repository_id))
        alternatives.append(AllOf(children))
    return AnyOf(alternatives)


def _certificate_identity(bundle: Bundle) -> tuple[str, str | None]:
    from cryptography import x509

    cert = bundle.signing_certificate
    san = "(no SAN)"
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = ext.get_values_for_type(x509.UniformResourceIdentifier) + ext.get_values_for_type(
            x509.RFC822Name
        )
        if names:
            san = names[0]
    except x509.ExtensionNotFound:
        pass
    issuer: str | None = None
    for ext in cert.extensions:
        oid = ext.oid.dotted_string
        if oid in (_OID_ISSUER_V1, _OID_ISSUER_V2) and isinstance(
            ext.value, x509.UnrecognizedExtension
        ):
            raw = ext.value.value
            # v2 is DER UTF8String (tag 0x0c + length), v1 raw bytes
            if oid == _OID_ISSUER_V2 and raw[:1] == b"\x0c":
                raw = raw[2:] if raw[1] < 0x80 else raw[2 + (raw[1] & 0x7F) :]
            issuer = raw.decode("utf-8", "replace")
            if oid == _OID_ISSUER_V2:
                break
    return san, issuer


class SigstoreVerifier:
    """Verifies sigstore bundles holding a DSSE envelope, offline, against a trusted root."""

    def __init__(self, *, trusted_roots: Mapping[str, TrustedRoot] | None = None) -> None:
        self._roots = dict(trusted_roots or {})

    def _root(self, instance: str) -> TrustedRoot:
        if instance not in self._roots:
            self._roots[instance] = TrustedRoot.from_file(str(bundled_trusted_root_path(instance)))
        return self._roots[instance]

    def verify(
        self, document: bytes, trust: Trust, *, source: str = "attestation"
    ) -> SignedPayload:
        try:
            bundle = Bundle.from_json(document)
        except (InvalidBundle, SigstoreError, ValueError, json.JSONDecodeError) as exc:
            raise AttestationError(
                f"{source}: not a valid sigstore bundle: {exc}",
                check="format",
                hint="pass the bundle written by the approval workflow, unmodified",
            ) from exc
        if bundle._dsse_envelope is None:
            raise AttestationError(
                f"{source}: the sigstore bundle signs an artifact, not a DSSE in-toto statement",
                check="format",
                hint="approval attestations are DSSE bundles made by `plangate attest`",
            )
        policy = identity_policy(trust.identities)
        san, issuer = _certificate_identity(bundle)
        try:
            policy.verify(bundle.signing_certificate)
        except VerificationError as exc:
            raise AttestationError(
                f"{source}: signed by untrusted identity {san} (issuer {issuer}); trusted: "
                + ", ".join(i.san for i in trust.identities),
                check="signer",
                hint="only the approval workflow on the default branch may sign; check the "
                "trusted identities in the default branch's policy",
            ) from exc
        try:
            payload_type, payload = Verifier(
                trusted_root=self._root(trust.sigstore_instance)
            ).verify_dsse(bundle, policy)
        except (VerificationError, SigstoreError) as exc:
            raise AttestationError(
                f"{source}: the sigstore bundle does not verify against the "
                f"{trust.sigstore_instance} trusted root: {exc}",
                check="signature",
                hint="the bundle was altered, or comes from another sigstore instance; "
                "re-create it from the approved pull request",
            ) from exc
        return SignedPayload(
            payload_type=payload_type,
            payload=payload,
            signer=SignerRef(kind="sigstore", id=san, issuer=issuer),
        )
