"""Ports and trust data shared by the signing backends.

A ``Signer`` turns payload bytes into a signed document (a DSSE envelope, or a sigstore bundle
wrapping one). A ``SignatureVerifier`` checks a signed document against ``Trust`` and returns the
payload together with *who* signed it. Everything after that step (statement, subject digest,
repository/PR binding, expiry) is backend-independent and lives in ``app.approvals.verify``.

``Trust`` is plain data. It must come from the default branch's policy or from the executor's
own configuration, never from the pull request under review: a PR that could add its own key
could approve itself. Verifiers fail closed: empty trust verifies nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from app.errors import PolicyLoadError

__all__ = [
    "GITHUB_ACTIONS_ISSUER",
    "SignatureVerifier",
    "SignedPayload",
    "Signer",
    "SignerRef",
    "Trust",
    "TrustedIdentity",
    "TrustedKey",
    "github_workflow_identity",
    "key_id",
    "trust_from_policy",
]

#: the OIDC issuer of GitHub Actions ID tokens (GitHub docs: "About security hardening with
#: OpenID Connect")
GITHUB_ACTIONS_ISSUER = "https://token.actions.githubusercontent.com"


def key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    """Key id: lowercase hex sha256 of the DER SubjectPublicKeyInfo (stable, self-certifying)."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def load_public_key(pem: str | bytes) -> ec.EllipticCurvePublicKey:
    """Load a PEM public key and insist it is ECDSA P-256 (the only curve we sign with)."""
    data = pem.encode() if isinstance(pem, str) else pem
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("not an ECDSA P-256 public key")
    return key


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TrustedKey(_Frozen):
    """A local-key signer the verifier accepts. ``keyid`` is derived from the key, never chosen."""

    public_key_pem: str = Field(min_length=1)
    name: str = Field("", description="who holds the key, for messages (e.g. 'plangate-bot')")
    keyid: str = Field("", description="filled in from the key; a wrong value is rejected")
    _key: ec.EllipticCurvePublicKey | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _derive_keyid(self) -> TrustedKey:
        try:
            key = load_public_key(self.public_key_pem)
        except ValueError as exc:
            raise ValueError(f"trusted key {self.name or '?'}: {exc}") from exc
        derived = key_id(key)
        if self.keyid and self.keyid != derived:
            raise ValueError(
                f"trusted key {self.name or '?'}: keyid {self.keyid} does not match the key "
                f"(its sha256 is {derived})"
            )
        object.__setattr__(self, "keyid", derived)
        self._key = key  # parsed once, not on every verification
        return self

    def public_key(self) -> ec.EllipticCurvePublicKey:
        if self._key is None:  # pragma: no cover - the validator always sets it
            self._key = load_public_key(self.public_key_pem)
        return self._key


class TrustedIdentity(_Frozen):
    """A keyless (sigstore) signer the verifier accepts: an exact certificate identity.

    ``san`` is compared exactly (no patterns): for GitHub Actions it is the workflow's URI at the
    default branch, see ``github_workflow_identity``. ``repository_uri``/``repository_id`` pin
    the Fulcio source-repository extensions too, so a renamed-then-recreated repository (same
    URI, new id) does not inherit trust.
    """

    san: str = Field(min_length=1)
    issuer: str = GITHUB_ACTIONS_ISSUER
    repository_uri: str | None = None
    repository_id: str | None = None


def github_workflow_identity(
    repository: str,
    workflow_file: str,
    default_branch: str,
    *,
    repository_id: int | str | None = None,
    server_url: str = "https://github.com",
) -> TrustedIdentity:
    """The pinned identity of ``.github/workflows/<workflow_file>`` on the default branch.

    Only a workflow that runs from the default branch (``workflow_dispatch`` or
    ``repository_dispatch``) has this SAN; a ``pull_request_review`` run gets the PR's merge ref
    instead, whose workflow file the PR author controls, so it can never match.
    """
    if "/" in workflow_file:
        raise ValueError(
            "workflow_file is a file name under .github/workflows/, e.g. 'approve.yml'"
        )
    base = f"{server_url.rstrip('/')}/{repository}"
    return TrustedIdentity(
        san=f"{base}/.github/workflows/{workflow_file}@refs/heads/{default_branch}",
        issuer=GITHUB_ACTIONS_ISSUER,
        repository_uri=base,
        repository_id=None if repository_id is None else str(repository_id),
    )


class Trust(_Frozen):
    """Who may sign approval attestations (from default-branch policy or executor config)."""

    keys: tuple[TrustedKey, ...] = ()
    identities: tuple[TrustedIdentity, ...] = ()
    sigstore_instance: Literal["production", "staging"] = Field(
        "production", description="which sigstore trusted root keyless bundles must chain to"
    )

    _by_id: dict[str, TrustedKey] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _index(self) -> Trust:
        self._by_id = {k.keyid: k for k in self.keys}
        return self

    def key_by_id(self, keyid: str) -> TrustedKey | None:
        return self._by_id.get(keyid)

    @property
    def empty(self) -> bool:
        return not self.keys and not self.identities


def trust_from_policy(
    signers: Iterable[Any], *, sigstore_instance: Literal["production", "staging"] = "production"
) -> Trust:
    """``Trust`` from the ``signers:`` of the default branch's policy (``app.policy``).

    Accepts the policy model's entries by shape: ``type: key`` with a PEM ``public_key``, or
    ``type: sigstore`` with ``identity`` (certificate SAN) and ``issuer``. A key that is not
    ECDSA P-256 is a policy error naming the signer (fail closed: never silently skipped).
    A ``sigstore`` entry may also pin ``repository`` (source repository URI) and
    ``repository_id`` (GitHub's immutable id): both certificate extensions must then match.
    """
    keys: list[TrustedKey] = []
    identities: list[TrustedIdentity] = []
    for signer in signers:
        kind = getattr(signer, "type", None)
        name = str(getattr(signer, "name", ""))
        if kind == "key":
            try:
                keys.append(TrustedKey(public_key_pem=signer.public_key, name=name))
            except ValueError as exc:
                raise PolicyLoadError(
                    f"signers: {name}: not a usable approval signing key ({exc})",
                    hint="use the .pub file written by `plangate keygen` (ECDSA P-256)",
                ) from exc
        elif kind == "sigstore":
            repo_id = getattr(signer, "repository_id", None)
            identities.append(
                TrustedIdentity(
                    san=signer.identity,
                    issuer=signer.issuer,
                    repository_uri=getattr(signer, "repository", None),
                    repository_id=None if repo_id is None else str(repo_id),
                )
            )
        else:
            raise PolicyLoadError(f"signers: {name}: unknown signer type {kind!r}")
    return Trust(
        keys=tuple(keys), identities=tuple(identities), sigstore_instance=sigstore_instance
    )


@dataclass(frozen=True, slots=True)
class SignerRef:
    """Who signed, as established by the signature step (never taken from the payload)."""

    kind: Literal["key", "sigstore"]
    #: key id (local key) or certificate SAN (sigstore)
    id: str
    issuer: str | None = None
    name: str = ""

    def describe(self) -> str:
        if self.kind == "key":
            return f"local key {self.name + ' ' if self.name else ''}{self.id[:16]}"
        return f"sigstore identity {self.id} (issuer {self.issuer})"


@dataclass(frozen=True, slots=True)
class SignedPayload:
    """The result of a successful signature step: verified bytes and their signer.

    Plain dataclasses (not pydantic): built by our own verifiers only, on the executor's hot
    path, from values that were already validated.
    """

    payload_type: str
    payload: bytes
    signer: SignerRef


@runtime_checkable
class Signer(Protocol):
    """Signs a payload. Returns the document to store (DSSE envelope or sigstore bundle JSON).

    ``kind`` names the document in storage paths (``pr-<N>/<head-sha>.<kind>.json``).
    Raises ``AttestationError(check="sign")`` when signing is impossible (no key, no identity).
    """

    kind: str

    def sign(self, payload_type: str, payload: bytes) -> bytes: ...


@runtime_checkable
class SignatureVerifier(Protocol):
    """Checks a stored document's signature against trust; returns payload and signer.

    Raises ``AttestationError`` with ``check`` = ``format`` (unreadable document),
    ``signature`` (does not verify: tampered, or signed by a key other than the one claimed) or
    ``signer`` (valid, but not by anyone ``Trust`` lists). Never returns on failure.
    """

    def verify(self, document: bytes, trust: Trust) -> SignedPayload: ...
