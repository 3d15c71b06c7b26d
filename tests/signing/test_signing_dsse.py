"""DSSE envelope model and PAE, checked against the spec and against sigstore-python."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.errors import AttestationError
from app.signing.dsse import INTOTO_PAYLOAD_TYPE, Envelope, Signature, pae

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "sigstore"


def test_pae_matches_dsse_spec_test_vector():
    # https://github.com/secure-systems-lab/dsse/blob/v1.0.0/protocol.md#test-case
    assert (
        pae("http://example.com/HelloWorld", b"hello world")
        == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_counts_bytes_not_characters():
    assert pae("t\u00e9", b"\x00\xff") == b"DSSEv1 3 t\xc3\xa9 2 \x00\xff"
    assert pae("", b"") == b"DSSEv1 0  0 "


@settings(max_examples=100, deadline=None)
@given(
    payload_type=st.text(st.characters(max_codepoint=127), max_size=40),
    payload=st.binary(max_size=200),
)
def test_pae_equals_sigstore_implementation(payload_type: str, payload: bytes):
    """Equal for ASCII types. sigstore-python 4.5.1 counts *characters* of the type where the
    spec says bytes, so they differ for non-ASCII types (ours follows the spec, see above)."""
    from sigstore.dsse import _pae as sigstore_pae

    assert pae(payload_type, payload) == sigstore_pae(payload_type, payload)


def test_envelope_json_shape_omits_absent_keyid():
    env = Envelope.wrap(INTOTO_PAYLOAD_TYPE, b"{}", [Signature(sig="AAAA")])
    data = json.loads(env.to_json())
    assert data == {
        "payload": base64.b64encode(b"{}").decode(),
        "payloadType": INTOTO_PAYLOAD_TYPE,
        "signatures": [{"sig": "AAAA"}],
    }
    assert env.payload_bytes == b"{}"
    assert env.pae() == pae(INTOTO_PAYLOAD_TYPE, b"{}")


def test_sigstore_bundle_dsse_envelope_parses_as_our_envelope():
    """The same JSON shape: a sigstore bundle's dsseEnvelope is one of our envelopes."""
    bundle = json.loads((FIXTURES / "a.dsse.staging-rekor-v2.txt.sigstore.json").read_bytes())
    env = Envelope.from_dict(bundle["dsseEnvelope"])
    assert env.payload_type == INTOTO_PAYLOAD_TYPE
    assert env.signatures[0].keyid is None
    assert json.loads(env.payload_bytes)["_type"] == "https://in-toto.io/Statement/v1"
    assert set(json.loads(env.to_json())) == set(bundle["dsseEnvelope"])


def test_empty_keyid_from_protobuf_json_is_absent():
    env = Envelope.from_dict(
        {"payloadType": "x", "payload": "", "signatures": [{"sig": "AA==", "keyid": ""}]}
    )
    assert env.signatures[0].keyid is None


@pytest.mark.parametrize(
    "data",
    [
        {"payloadType": "x", "payload": "", "signatures": []},
        {"payloadType": "x", "payload": "%%%", "signatures": [{"sig": "AA=="}]},
        {"payloadType": "x", "payload": "", "signatures": [{"sig": "not base64!"}]},
        {"payloadType": "", "payload": "", "signatures": [{"sig": "AA=="}]},
        {"payloadType": "x", "payload": "", "signatures": [{"sig": "AA=="}], "extra": 1},
        ["not", "an", "object"],
    ],
)
def test_malformed_envelopes_are_format_errors(data):
    with pytest.raises(AttestationError) as info:
        Envelope.from_dict(data, source="x.json")
    assert info.value.check == "format"
    assert info.value.message.startswith("x.json: not a valid DSSE envelope")


def test_non_json_is_a_format_error():
    with pytest.raises(AttestationError, match="not JSON") as info:
        Envelope.from_json(b"\xff\xfe")
    assert info.value.check == "format"


@settings(max_examples=100, deadline=None)
@given(
    payload_type=st.text(max_size=30),
    payload=st.binary(max_size=64),
    keyids=st.lists(st.none() | st.text(max_size=20), min_size=1, max_size=3),
)
def test_envelope_json_equals_stdlib_json(payload_type, payload, keyids):
    sigs = [
        Signature(keyid=k or None, sig=base64.b64encode(b"s%d" % i).decode())
        for i, k in enumerate(keyids)
    ]
    env = Envelope.wrap(payload_type or "t", payload, sigs)
    data = env.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert env.to_json() == json.dumps(data, sort_keys=True, indent=2) + "\n"
    assert Envelope.from_json(env.to_json()) == env


def test_document_kind_recognises_both_backends():
    from app.signing import document_kind

    bundle = (FIXTURES / "a.dsse.staging-rekor-v2.txt.sigstore.json").read_bytes()
    assert document_kind(bundle) == "sigstore"
    envelope = Envelope.wrap(INTOTO_PAYLOAD_TYPE, b"{}", [Signature(sig="AAAA")])
    assert document_kind(envelope.to_json().encode()) == "dsse"
    for bad in (b"{}", b"[]", b'{"mediaType": "text/plain"}', b"\xff"):
        with pytest.raises(AttestationError) as info:
            document_kind(bad)
        assert info.value.check == "format"


def test_bundle_look_alike_is_a_format_error():
    from app.signing import Trust, TrustedIdentity, verify_signed_document

    trust = Trust(identities=(TrustedIdentity(san="x"),))
    with pytest.raises(AttestationError) as info:
        verify_signed_document(b'{"mediaType": "text/plain", "payloadType": "x"}', trust)
    assert info.value.check == "format"
