"""Property tests for the sans-I/O webhook layer."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.server.webhooks import Event, MalformedDelivery, sign, verify_signature

SECRET = b"s3cret"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000), st.integers(min_value=0), st.integers(min_value=1, max_value=255))
def test_any_body_change_breaks_the_signature(body, position, flip):
    signature = sign(SECRET, body)
    assert verify_signature(SECRET, body, signature)
    if body:
        i = position % len(body)
        tampered = body[:i] + bytes([body[i] ^ flip]) + body[i + 1 :]
    else:
        tampered = bytes([flip])
    assert not verify_signature(SECRET, tampered, signature)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200), st.text(max_size=80))
def test_signature_from_another_secret_never_verifies(body, other):
    assert not verify_signature(SECRET, body, sign(other.encode() + b"x", body))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=500))
def test_event_parsing_raises_only_malformed_delivery(body):
    try:
        event = Event.from_body("pull_request", "id-1", body)
    except MalformedDelivery:
        return
    assert isinstance(event.payload, dict)
    event.action, event.installation_id, event.repo_full_name  # noqa: B018


@pytest.mark.parametrize(
    "header", [None, "", "sha256=", "sha256=zz", "md5=abc", "sha256=" + "0" * 64]
)
def test_malformed_signature_headers_rejected(header):
    assert not verify_signature(SECRET, b"{}", header)


def test_boolean_installation_id_is_no_installation():
    assert Event.from_body("push", "d", b'{"installation": {"id": true}}').installation_id is None
