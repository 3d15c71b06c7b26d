"""The event model and the canonical hashing behind the chain."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
import rfc8785
from audit_support import DIGEST, draft
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from app.audit.events import (
    EVENT_TYPES,
    GENESIS_HASH,
    AuditEvent,
    ChainHead,
    canonical_bytes,
    chain,
    event_hash,
    verify_records,
)

_KEYS = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=6
) | st.sampled_from(["a", "b", "\ue000", "\U0001f600", "z\U00010000", "é"])
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_JSON)
def test_canonical_bytes_equal_rfc8785(value):
    assert canonical_bytes(value) == rfc8785.dumps(value)


def test_utf16_key_order_is_respected():
    # U+1F600 sorts after U+E000 by code point but before it by UTF-16 code unit (0xD83D)
    value = {"\U0001f600": 1, "\ue000": 2}
    assert canonical_bytes(value) == rfc8785.dumps(value)
    assert canonical_bytes(value).index("\U0001f600".encode()) < canonical_bytes(value).index(
        "\ue000".encode()
    )


def test_every_lifecycle_event_type_from_the_issue():
    assert set(EVENT_TYPES) == {
        "plan.proposed", "plan.validated", "policy.decided", "cost.estimated",
        "approval.recorded", "approval.attested", "run.started", "step.started",
        "step.succeeded", "step.failed", "step.retried", "breaker.opened", "breaker.closed",
        "canary.passed", "canary.aborted", "compensation.started", "compensation.succeeded",
        "compensation.failed", "budget.exceeded", "run.finished", "incident.opened",
        "run.attested", "queue.requested",
    }  # fmt: skip


def test_naive_timestamp_is_refused():
    with pytest.raises(ValidationError, match="timezone-aware"):
        draft(0, timestamp=datetime(2026, 11, 25, 2, 0))


def test_timestamp_is_normalised_to_utc():
    cet = timezone(timedelta(hours=1))
    d = draft(0, timestamp=datetime(2026, 11, 25, 3, 0, tzinfo=cet))
    assert d.timestamp == datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
    assert d.timestamp.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("plan_digest", "md5:abc", "sha256"),
        ("correlation_id", "has space", "letters, digits"),
        ("correlation_id", "", "letters, digits"),
        ("type", "step.exploded", "Input should be"),
        ("payload", {"x": float("nan")}, "no canonical JSON form"),
        ("payload", {"x": 2**60}, "no canonical JSON form"),
    ],
)
def test_invalid_drafts_are_refused(field, value, match):
    with pytest.raises(ValidationError, match=match):
        draft(0, **{field: value})


def test_drafts_are_immutable():
    d = draft(0)
    with pytest.raises(ValidationError):
        d.step = "other"  # type: ignore[misc]


def test_chain_links_and_hash_excludes_itself():
    events = chain([draft(i) for i in range(3)], ChainHead())
    assert events[0].prev_hash == GENESIS_HASH
    body = events[1].model_dump(mode="json", exclude_none=True)
    assert event_hash(body) == events[1].hash
    del body["hash"]
    assert event_hash(body) == events[1].hash
    continued = chain([draft(3)], ChainHead(events[-1].seq, events[-1].hash))
    assert continued[0].seq == 4 and continued[0].prev_hash == events[-1].hash


def test_json_line_round_trip_is_stable():
    event = chain([draft(1, payload={"a": None, "n": [1.5, "x", {"k": None}]})], ChainHead())[0]
    line = event.to_json_line()
    again = AuditEvent.model_validate_json(line)
    assert again == event
    assert again.to_json_line() == line
    assert event_hash(json.loads(line)) == event.hash
    assert "\n" not in line


def test_optional_fields_are_omitted_not_null():
    event = chain([draft(0, plan_id=None, step=None)], ChainHead())[0]
    data = json.loads(event.to_json_line())
    assert "plan_id" not in data and "step" not in data
    assert data["plan_digest"] == DIGEST


# -- stored lines are canonical; verification trusts bytes only when they prove themselves ----


def _line_records(events):
    return [(f"#{e.seq}", e.to_json_line()) for e in events]


def test_stored_line_is_rfc8785_of_the_whole_event():
    event = chain([draft(0, payload={"f": 1.5, "z": "\u2028"})], ChainHead())[0]
    assert event.to_json_line().encode() == rfc8785.dumps(json.loads(event.to_json_line()))


def test_reformatted_but_equal_lines_still_verify():
    events = chain([draft(i) for i in range(3)], ChainHead())
    records = [(w, json.dumps(json.loads(line), indent=1)) for w, line in _line_records(events)]
    assert verify_records(records).ok


def test_payload_with_its_own_hash_key_verifies():
    events = chain([draft(0, payload={"hash": "sha256:" + "0" * 64})], ChainHead())
    assert verify_records(_line_records(events)).ok


def test_smuggled_member_is_detected():
    events = chain([draft(i) for i in range(2)], ChainHead())
    records = _line_records(events)
    where, line = records[1]
    records[1] = (where, line.replace('{"actor"', '{"actor_note":"x","actor"', 1))
    result = verify_records(records)
    assert not result.ok and result.first_break.seq == 2


def test_line_separator_in_payload_survives_git(git_store):
    written = git_store.append([draft(0, payload={"text": "a\u2028b\u0085c"})])
    git_store.commit()
    assert list(git_store.events()) == written
    assert git_store.verify().ok


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(_KEYS, _JSON, max_size=4))
def test_single_pass_hash_and_line_match_the_definition(payload):
    from app.audit.events import _hash_and_line

    body = draft(0, payload={}).model_dump(mode="json", exclude_none=True)
    body.update(payload={**payload}, seq=1, prev_hash=GENESIS_HASH)
    digest, line = _hash_and_line(body)
    assert digest == "sha256:" + __import__("hashlib").sha256(rfc8785.dumps(body)).hexdigest()
    assert line.encode() == rfc8785.dumps({**body, "hash": digest})
