"""Local ECDSA P-256 key backend: key files, key id, sign/verify, interop with sigstore's DSSE."""

from __future__ import annotations

import hashlib
import json
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from app.errors import AttestationError
from app.signing import Trust, TrustedKey, key_id
from app.signing.dsse import INTOTO_PAYLOAD_TYPE, Envelope
from app.signing.local_key import (
    LocalKeySigner,
    LocalKeyVerifier,
    load_private_key,
    write_keypair,
)

PAYLOAD = b'{"_type":"https://in-toto.io/Statement/v1"}'


def _pem(key) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def test_keygen_writes_private_key_0600_and_public_key(tmp_path):
    pair = write_keypair(tmp_path / "keys" / "approval.pem")
    assert stat.S_IMODE(pair.private.stat().st_mode) == 0o600
    assert pair.public.name == "approval.pem.pub"
    key = load_private_key(pair.private)
    assert isinstance(key.curve, ec.SECP256R1)
    public = serialization.load_pem_public_key(pair.public.read_bytes())
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert pair.keyid == hashlib.sha256(der).hexdigest() == key_id(key.public_key())


def test_keygen_never_overwrites_a_key_by_accident(tmp_path):
    pair = write_keypair(tmp_path / "k.pem")
    before = pair.private.read_bytes()
    with pytest.raises(AttestationError, match="refusing to overwrite") as info:
        write_keypair(tmp_path / "k.pem")
    assert info.value.check == "keygen"
    assert pair.private.read_bytes() == before
    pair.private.chmod(0o644)
    write_keypair(tmp_path / "k.pem", overwrite=True)
    assert pair.private.read_bytes() != before
    assert stat.S_IMODE(pair.private.stat().st_mode) == 0o600


def test_load_private_key_errors_name_the_file(tmp_path):
    with pytest.raises(AttestationError, match=r"missing\.pem: cannot read"):
        load_private_key(tmp_path / "missing.pem")
    bad = tmp_path / "bad.pem"
    bad.write_text("hello")
    with pytest.raises(AttestationError, match=r"bad\.pem: not an unencrypted PEM"):
        load_private_key(bad)
    other = tmp_path / "ed.pem"
    other.write_bytes(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(AttestationError, match="not an ECDSA P-256 key"):
        load_private_key(other)


def test_sign_and_verify_round_trip():
    key = ec.generate_private_key(ec.SECP256R1())
    document = LocalKeySigner(key).sign(INTOTO_PAYLOAD_TYPE, PAYLOAD)
    envelope = Envelope.from_json(document)
    assert envelope.signatures[0].keyid == key_id(key.public_key())
    result = LocalKeyVerifier().verify(
        document, Trust(keys=(TrustedKey(public_key_pem=_pem(key), name="bot"),))
    )
    assert result.payload == PAYLOAD
    assert result.payload_type == INTOTO_PAYLOAD_TYPE
    assert result.signer.kind == "key"
    assert result.signer.name == "bot"


def test_our_envelope_verifies_with_sigstore_dsse_implementation():
    """Interoperability: sigstore-python's own DSSE verifier accepts our envelopes."""
    from sigstore import dsse

    key = ec.generate_private_key(ec.SECP256R1())
    document = LocalKeySigner(key).sign(INTOTO_PAYLOAD_TYPE, PAYLOAD)
    theirs = dsse.Envelope._from_json(document)
    assert dsse._verify(key.public_key(), theirs) == PAYLOAD


def test_trusted_key_id_is_derived_and_checked():
    key = ec.generate_private_key(ec.SECP256R1())
    trusted = TrustedKey(public_key_pem=_pem(key))
    assert trusted.keyid == key_id(key.public_key())
    assert TrustedKey(public_key_pem=_pem(key), keyid=trusted.keyid) == trusted
    with pytest.raises(ValueError, match="does not match the key"):
        TrustedKey(public_key_pem=_pem(key), keyid="00" * 32)


def test_trusted_key_must_be_p256():
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(ValueError, match="not an ECDSA P-256 public key"):
        TrustedKey(public_key_pem=_pem(p384))


def test_verifier_with_no_keys_fails_closed():
    key = ec.generate_private_key(ec.SECP256R1())
    document = LocalKeySigner(key).sign(INTOTO_PAYLOAD_TYPE, PAYLOAD)
    with pytest.raises(AttestationError) as info:
        LocalKeyVerifier().verify(document, Trust())
    assert info.value.check == "signer"


def test_signature_over_bare_payload_is_not_accepted():
    """Signatures cover PAE, not the payload: a raw-payload signature must fail."""
    key = ec.generate_private_key(ec.SECP256R1())
    import base64

    from cryptography.hazmat.primitives import hashes

    raw_sig = key.sign(PAYLOAD, ec.ECDSA(hashes.SHA256()))
    document = {
        "payloadType": INTOTO_PAYLOAD_TYPE,
        "payload": base64.b64encode(PAYLOAD).decode(),
        "signatures": [
            {"keyid": key_id(key.public_key()), "sig": base64.b64encode(raw_sig).decode()}
        ],
    }
    with pytest.raises(AttestationError) as info:
        LocalKeyVerifier().verify(
            json.dumps(document).encode(), Trust(keys=(TrustedKey(public_key_pem=_pem(key)),))
        )
    assert info.value.check == "signature"
