"""A local, in-process fake Sigstore (Fulcio CA + CT log + Rekor v1) for keyless-signing tests.

Test-only. It leans on sigstore-python's private plumbing (``SigningContext`` accepting any
Fulcio/Rekor client object, ``RekorClient._build_dsse_request``,
``TransparencyLogEntry._from_v1_response``), so it is pinned to the version it was written
against: ``SIGSTORE_VERSION`` (tests skip on any other version rather than fail obscurely).

What it issues is real cryptography, so sigstore's own ``Verifier`` checks all of it:

* a Fulcio-like CA certificate and, per signing request, a short-lived leaf certificate for the
  CSR's key with the GitHub Actions identity taken from the OIDC token (SAN
  ``https://github.com/<job_workflow_ref>``, issuer extensions v1/v2, source repository URI and
  id extensions), carrying an embedded precertificate SCT signed by a fake CT log key
  (RFC 6962 ``digitally-signed`` over the TBS without the SCT list);
* a Rekor v1 ``dsse`` entry as Rekor canonicalises it (payload hash + signatures), a one-leaf
  Merkle inclusion proof, a signed checkpoint note and a signed entry timestamp (SET);
* a trusted root (protobuf JSON) naming the three keys.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import rfc8785
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

SIGSTORE_VERSION = "4.5.1"
ISSUER = "https://token.actions.githubusercontent.com"
_ECDSA = ec.ECDSA(hashes.SHA256())
_OID_ISSUER_V1 = ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
_OID_ISSUER_V2 = ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
_OID_SOURCE_REPO_URI = ObjectIdentifier("1.3.6.1.4.1.57264.1.12")
_OID_SOURCE_REPO_ID = ObjectIdentifier("1.3.6.1.4.1.57264.1.15")
_OID_SCT_LIST = ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _utf8string(value: str) -> bytes:
    raw = value.encode()
    return b"\x0c" + _der_len(len(raw)) + raw


def _spki_der(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _log_id(key: ec.EllipticCurvePublicKey) -> bytes:
    return hashlib.sha256(_spki_der(key)).digest()


def _split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def _mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 2.1 Merkle Tree Hash of leaf hashes."""
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return hashlib.sha256(b"\x01" + _mth(leaves[:k]) + _mth(leaves[k:])).digest()


def _path(m: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 6962 2.1.1 audit path of leaf ``m`` (leaf to root order)."""
    if len(leaves) == 1:
        return []
    k = _split(len(leaves))
    if m < k:
        return [*_path(m, leaves[:k]), _mth(leaves[k:])]
    return [*_path(m - k, leaves[k:]), _mth(leaves[:k])]


def actions_token(job_workflow_ref: str, *, repository_id: str = "1296269", **extra: Any) -> str:
    """A GitHub-Actions-shaped OIDC token (unsigned for our purposes: the fake CA trusts it)."""
    now = int(time.time())
    repo = job_workflow_ref.split("/.github/")[0]
    claims = {
        "iss": ISSUER,
        "aud": "sigstore",
        "sub": f"repo:{repo}:ref:refs/heads/main",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "repository": repo,
        "repository_id": repository_id,
        "ref": "refs/heads/main",
        "event_name": "workflow_dispatch",
        "job_workflow_ref": job_workflow_ref,
        **extra,
    }
    return jwt.encode(claims, "fake-sigstore-test-secret-0123456789", algorithm="HS256")


@dataclass
class _CertificateResponse:
    cert: x509.Certificate
    chain: list[x509.Certificate]


class _SigningCert:
    def __init__(self, instance: FakeSigstore) -> None:
        self._instance = instance

    def post(self, csr: x509.CertificateSigningRequest, identity: Any) -> _CertificateResponse:
        claims = jwt.decode(identity._raw_token, options={"verify_signature": False})
        cert = self._instance.issue(csr.public_key(), claims)
        return _CertificateResponse(cert=cert, chain=[self._instance.ca_cert])


class FakeFulcio:
    def __init__(self, instance: FakeSigstore) -> None:
        self.signing_cert = _SigningCert(instance)


class FakeSigstore:
    """Keys, CA and log state of one fake instance."""

    def __init__(self) -> None:
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ct_key = ec.generate_private_key(ec.SECP256R1())
        self.rekor_key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        self.not_before = now - timedelta(days=1)
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fake-sigstore.test"),
                x509.NameAttribute(NameOID.COMMON_NAME, "fake-fulcio"),
            ]
        )
        ski = x509.SubjectKeyIdentifier.from_public_key(self.ca_key.public_key())
        self.ca_cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.not_before)
            .not_valid_after(now + timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(self.ca_key, hashes.SHA256())
        )
        self.entries: list[bytes] = []

    # --- Fulcio + CT log ------------------------------------------------------------------

    def issue(self, public_key: Any, claims: dict[str, Any]) -> x509.Certificate:
        san = "https://github.com/" + claims["job_workflow_ref"]
        repo_uri = "https://github.com/" + claims["repository"]
        now = datetime.now(UTC).replace(microsecond=0)
        serial = x509.random_serial_number()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.ca_cert.subject)
            .public_key(public_key)
            .serial_number(serial)
            .not_valid_before(now - timedelta(seconds=5))
            .not_valid_after(now + timedelta(minutes=10))
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()),
                False,
            )
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(san)]), critical=True
            )
            .add_extension(x509.UnrecognizedExtension(_OID_ISSUER_V1, ISSUER.encode()), False)
            .add_extension(x509.UnrecognizedExtension(_OID_ISSUER_V2, _utf8string(ISSUER)), False)
            .add_extension(
                x509.UnrecognizedExtension(_OID_SOURCE_REPO_URI, _utf8string(repo_uri)), False
            )
            .add_extension(
                x509.UnrecognizedExtension(
                    _OID_SOURCE_REPO_ID, _utf8string(str(claims["repository_id"]))
                ),
                False,
            )
        )
        # The SCT signs the certificate *without* its SCT list (RFC 6962 precertificate entry);
        # the same builder without that extension yields exactly those TBS bytes.
        precert_tbs = builder.sign(self.ca_key, hashes.SHA256()).tbs_certificate_bytes
        sct = self._sct(precert_tbs, int(now.timestamp() * 1000))
        return builder.add_extension(
            x509.UnrecognizedExtension(_OID_SCT_LIST, sct), critical=False
        ).sign(self.ca_key, hashes.SHA256())

    def _sct(self, tbs: bytes, timestamp_ms: int) -> bytes:
        issuer_key_hash = _log_id(self.ca_key.public_key())
        signed_entry = issuer_key_hash + struct.pack("!I", len(tbs))[1:] + tbs
        digitally_signed = struct.pack(
            f"!BBQH{len(signed_entry)}sH", 0, 0, timestamp_ms, 1, signed_entry, 0
        )
        signature = self.ct_key.sign(digitally_signed, _ECDSA)
        sct = (
            b"\x00"
            + _log_id(self.ct_key.public_key())
            + struct.pack("!QH", timestamp_ms, 0)
            + b"\x04\x03"
            + struct.pack("!H", len(signature))
            + signature
        )
        tls_list = struct.pack("!H", len(sct) + 2) + struct.pack("!H", len(sct)) + sct
        return b"\x04" + _der_len(len(tls_list)) + tls_list  # extnValue: OCTET STRING

    # --- Rekor ----------------------------------------------------------------------------

    def rekor(self) -> Any:
        from sigstore._internal.rekor.client import RekorClient

        instance = self

        class FakeRekor(RekorClient):
            def __init__(self) -> None:
                super().__init__("https://rekor.fake-sigstore.test")

            def create_entry(self, request: Any) -> Any:
                return instance.log_dsse(dict(request))

        return FakeRekor()

    def log_dsse(self, proposed: dict[str, Any]) -> Any:
        from sigstore.models import TransparencyLogEntry

        content = proposed["spec"]["proposedContent"]
        envelope = json.loads(content["envelope"])
        body = {
            "apiVersion": "0.0.1",
            "kind": "dsse",
            "spec": {
                "envelopeHash": {
                    "algorithm": "sha256",
                    "value": hashlib.sha256(content["envelope"].encode()).hexdigest(),
                },
                "payloadHash": {
                    "algorithm": "sha256",
                    "value": hashlib.sha256(base64.b64decode(envelope["payload"])).hexdigest(),
                },
                "signatures": [
                    {"signature": sig["sig"], "verifier": content["verifiers"][0]}
                    for sig in envelope["signatures"]
                ],
            },
        }
        canonical = rfc8785.dumps(body)
        index = len(self.entries)
        self.entries.append(canonical)
        # RFC 6962 Merkle tree over every entry so far: root and inclusion path of this one
        leaves = [hashlib.sha256(b"\x00" + e).digest() for e in self.entries]
        size = len(leaves)
        root = _mth(leaves)
        path = _path(index, leaves)
        log_id = _log_id(self.rekor_key.public_key())
        integrated = int(time.time())
        body_b64 = base64.b64encode(canonical).decode()
        set_payload = rfc8785.dumps(
            {
                "body": body_b64,
                "integratedTime": integrated,
                "logID": log_id.hex(),
                "logIndex": index,
            }
        )
        note = f"rekor.fake-sigstore.test - 1\n{size}\n{base64.b64encode(root).decode()}\n"
        note_sig = log_id[:4] + self.rekor_key.sign(note.encode(), _ECDSA)
        checkpoint = (
            f"{note}\n\u2014 rekor.fake-sigstore.test {base64.b64encode(note_sig).decode()}\n"
        )
        response = {
            "fake-uuid": {
                "body": body_b64,
                "integratedTime": integrated,
                "logID": log_id.hex(),
                "logIndex": index,
                "verification": {
                    "inclusionProof": {
                        "checkpoint": checkpoint,
                        "hashes": [h.hex() for h in path],
                        "logIndex": index,
                        "rootHash": root.hex(),
                        "treeSize": size,
                    },
                    "signedEntryTimestamp": base64.b64encode(
                        self.rekor_key.sign(set_payload, _ECDSA)
                    ).decode(),
                },
            }
        }
        return TransparencyLogEntry._from_v1_response(response)

    # --- trust ----------------------------------------------------------------------------

    def trusted_root_json(self) -> str:
        def key(k: ec.EllipticCurvePrivateKey, url: str) -> dict[str, Any]:
            return {
                "baseUrl": url,
                "hashAlgorithm": "SHA2_256",
                "publicKey": {
                    "rawBytes": base64.b64encode(_spki_der(k.public_key())).decode(),
                    "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                    "validFor": {"start": self.not_before.strftime("%Y-%m-%dT%H:%M:%SZ")},
                },
                "logId": {"keyId": base64.b64encode(_log_id(k.public_key())).decode()},
            }

        return json.dumps(
            {
                "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
                "tlogs": [key(self.rekor_key, "https://rekor.fake-sigstore.test")],
                "certificateAuthorities": [
                    {
                        "subject": {"organization": "fake-sigstore.test", "commonName": "fake"},
                        "uri": "https://fulcio.fake-sigstore.test",
                        "certChain": {
                            "certificates": [
                                {
                                    "rawBytes": base64.b64encode(
                                        self.ca_cert.public_bytes(serialization.Encoding.DER)
                                    ).decode()
                                }
                            ]
                        },
                        "validFor": {"start": self.not_before.strftime("%Y-%m-%dT%H:%M:%SZ")},
                    }
                ],
                "ctlogs": [key(self.ct_key, "https://ctfe.fake-sigstore.test")],
                "timestampAuthorities": [],
            }
        )

    def trusted_root(self) -> Any:
        from sigstore.models import TrustedRoot
        from sigstore_models.trustroot.v1 import TrustedRoot as _Inner

        return TrustedRoot(_Inner.from_json(self.trusted_root_json()))

    def signing_context(self) -> Any:
        from sigstore.sign import SigningContext

        return SigningContext(
            fulcio=FakeFulcio(self),  # type: ignore[arg-type]
            rekor=self.rekor(),
            trusted_root=self.trusted_root(),
            tsa_clients=[],
        )
