"""Local key backend: ECDSA P-256 / SHA-256 over DSSE PAE, with ``cryptography``.

For self-hosted servers, private repositories (keyless signing on the public-good sigstore
instance would publish the repository and workflow in the public Rekor log), the local embedded
default (``environment: local`` plans) and tests. Signatures are DER-encoded ECDSA, as sigstore
and DSSE implementations write them. The key id is the sha256 of the DER SubjectPublicKeyInfo.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from app.errors import AttestationError
from app.signing.base import SignedPayload, SignerRef, Trust, key_id
from app.signing.dsse import Envelope, Signature, envelope_json, pae

__all__ = [
    "KeyPairPaths",
    "LocalKeySigner",
    "LocalKeyVerifier",
    "generate_private_key",
    "load_private_key",
    "write_keypair",
]

_ECDSA = ec.ECDSA(hashes.SHA256())


def generate_private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@dataclass(frozen=True, slots=True)
class KeyPairPaths:
    private: Path
    public: Path
    keyid: str


def write_keypair(
    private_path: Path, key: ec.EllipticCurvePrivateKey | None = None, *, overwrite: bool = False
) -> KeyPairPaths:
    """Write ``private_path`` (PEM PKCS#8, mode 0600) and ``<private_path>.pub`` (PEM SPKI).

    The private file is created with 0600 from the start (``os.open`` mode), never chmod-ed
    after being written, so the key is not readable by others even for an instant. An existing
    key is never replaced unless ``overwrite`` (losing a key invalidates its attestations).
    """
    key = key or generate_private_key()
    private_path = Path(private_path)
    public_path = private_path.with_name(private_path.name + ".pub")
    for path in (private_path, public_path):
        if path.exists() and not overwrite:
            raise AttestationError(
                f"{path}: already exists; refusing to overwrite a signing key",
                check="keygen",
                hint="choose another --out path, or delete the old key if you really mean to",
            )
    private_path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(private_path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to an existing file
        os.write(fd, pem)
    finally:
        os.close(fd)
    public = key.public_key()
    public_path.write_bytes(
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return KeyPairPaths(private=private_path, public=public_path, keyid=key_id(public))


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """Read a PEM private key written by ``plangate keygen``; errors say which file and why."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise AttestationError(
            f"{path}: cannot read the signing key ({exc.strerror})",
            check="sign",
            hint="create one with `plangate keygen` or pass --key PATH",
        ) from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise AttestationError(
            f"{path}: not an unencrypted PEM private key",
            check="sign",
            hint="use a key made by `plangate keygen`",
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise AttestationError(
            f"{path}: not an ECDSA P-256 key", check="sign", hint="use `plangate keygen`"
        )
    return key


class LocalKeySigner:
    """Signs DSSE envelopes with one private key; the envelope names the key id."""

    kind = "dsse"

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self._key = key
        self.keyid = key_id(key.public_key())

    def sign_envelope(self, payload_type: str, payload: bytes) -> Envelope:
        sig = self._key.sign(pae(payload_type, payload), _ECDSA)
        return Envelope.wrap(
            payload_type,
            payload,
            [Signature(keyid=self.keyid, sig=base64.b64encode(sig).decode("ascii"))],
        )

    def sign(self, payload_type: str, payload: bytes) -> bytes:
        # same bytes as sign_envelope(...).to_json(), without building the model
        sig = self._key.sign(pae(payload_type, payload), _ECDSA)
        return envelope_json(
            payload_type,
            base64.b64encode(payload).decode("ascii"),
            [(self.keyid, base64.b64encode(sig).decode("ascii"))],
        ).encode()


class LocalKeyVerifier:
    """Verifies a DSSE envelope against the trusted keys in ``Trust`` (fails closed).

    A signature counts only if a *trusted* key verifies it over PAE. ``keyid`` is a lookup
    hint: a signature whose keyid names a trusted key but does not verify is ``signature``
    (tampered or forged); a well-formed envelope signed only by unknown keys is ``signer``.
    """

    def verify(
        self, document: bytes, trust: Trust, *, source: str = "attestation"
    ) -> SignedPayload:
        envelope = Envelope.from_json(document, source=source)
        return self.verify_envelope(envelope, trust, source=source)

    def verify_envelope(
        self, envelope: Envelope, trust: Trust, *, source: str = "attestation"
    ) -> SignedPayload:
        if not trust.keys:
            raise AttestationError(
                f"{source}: no trusted signing keys are configured, so no local-key "
                "attestation can be accepted",
                check="signer",
                hint="list the approval bot's public key under trusted signers in the default "
                "branch's policy (or the executor's configuration)",
            )
        message = envelope.pae()
        claimed_trusted = False
        for signature in envelope.signatures:
            if signature.keyid is not None:
                candidate = trust.key_by_id(signature.keyid)
                candidates = [candidate] if candidate else []
            else:
                candidates = list(trust.keys)
            for trusted in candidates:
                claimed_trusted = True
                try:
                    trusted.public_key().verify(signature.sig_bytes, message, _ECDSA)
                except InvalidSignature:
                    continue
                return SignedPayload(
                    payload_type=envelope.payload_type,
                    payload=envelope.payload_bytes,
                    signer=SignerRef(kind="key", id=trusted.keyid, name=trusted.name),
                )
        if claimed_trusted:
            raise AttestationError(
                f"{source}: the signature does not verify: the statement was changed after "
                "signing, or it was signed by a different key than the one it names",
                check="signature",
                hint="do not edit attestations; re-create it from the approved pull request",
            )
        keyids = ", ".join(s.keyid or "(none)" for s in envelope.signatures)
        raise AttestationError(
            f"{source}: signed by untrusted key {keyids}; trusted keys: "
            + ", ".join(f"{k.name or '?'}={k.keyid[:16]}" for k in trust.keys),
            check="signer",
            hint="only keys listed as trusted signers on the default branch may sign approvals; "
            "add the key there (through a reviewed change) or sign with a trusted key",
        )
