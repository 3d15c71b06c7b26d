"""The approval statement: shape, canonical payload, and invariants checked when built."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from test_attest_support import BLOB, DIGEST, HEAD, NOW, PLAN, POLICY, REPO, pr_statement

from app.approvals.attest import (
    APPROVAL_PREDICATE_TYPE,
    INTOTO_PAYLOAD_TYPE,
    ApprovalPredicate,
    ApprovalStatement,
    Approver,
    DigestSet,
    PlanSubject,
    RepositoryRef,
    build_statement,
    local_attestation_path,
    storage_path,
)
from app.signing.dsse import INTOTO_PAYLOAD_TYPE as DSSE_INTOTO


def test_statement_shape_is_in_toto_v1_with_versioned_predicate_type():
    data = json.loads(pr_statement().payload())
    assert data["_type"] == "https://in-toto.io/Statement/v1"
    assert data["predicateType"] == APPROVAL_PREDICATE_TYPE
    assert APPROVAL_PREDICATE_TYPE.endswith("/v1")
    assert data["subject"] == [
        {
            "name": PLAN,
            "digest": {"sha256": DIGEST.removeprefix("sha256:")},
            "annotations": {"gitBlob": BLOB},
        }
    ]
    pred = data["predicate"]
    assert pred["repository"]["name"] == REPO
    assert pred["pullRequest"] == {"number": 42, "url": f"https://github.com/{REPO}/pull/42"}
    assert pred["base"] == {"ref": "refs/heads/main", "sha": "e5" * 20}
    assert pred["headSha"] == HEAD
    assert pred["approvers"][0] == {
        "login": "alice",
        "reviewId": 80,
        "commit": HEAD,
        "approvedAt": "2026-11-25T11:55:00Z",
        "requirement": "dba-review",
    }
    assert pred["policyDigest"] == POLICY
    assert pred["risk"] == {"score": 70, "level": "high"}
    assert pred["cost"] == {"total": "12.50", "currency": "USD"}
    assert pred["evaluatedAt"] == "2026-11-25T12:00:00Z"
    assert pred["expiresAt"] == "2026-11-26T12:00:00Z"


def test_payload_is_canonical_and_round_trips():
    statement = pr_statement()
    payload = statement.payload()
    assert (
        payload == json.dumps(json.loads(payload), sort_keys=True, separators=(",", ":")).encode()
    )
    assert ApprovalStatement.model_validate_json(payload) == statement


def test_subject_order_does_not_change_payload():
    a = ("plans/a.yaml", DIGEST, None)
    b = ("plans/b.yaml", DIGEST, None)
    assert pr_statement(plans=[a, b]).payload() == pr_statement(plans=[b, a]).payload()


def test_sigstore_accepts_our_statement_payload():
    from sigstore.dsse import Statement

    payload = pr_statement().payload()
    # raises on anything sigstore-python refuses to sign (e.g. a gitBlob digest key)
    assert Statement(payload)._contents == payload


def test_payload_type_constant_matches_dsse_module():
    assert INTOTO_PAYLOAD_TYPE == DSSE_INTOTO == "application/vnd.in-toto+json"


def test_expiry_must_follow_evaluation():
    with pytest.raises(ValueError, match="ttl must be positive"):
        pr_statement(ttl=timedelta(0))
    pred = pr_statement().predicate.model_dump(by_alias=True)
    pred["expiresAt"] = pred["evaluatedAt"]
    with pytest.raises(ValidationError, match="expiresAt must be after evaluatedAt"):
        ApprovalPredicate.model_validate(pred)


def test_naive_times_are_rejected():
    with pytest.raises(ValidationError, match="timezone-aware"):
        Approver(login="alice", approvedAt=datetime(2026, 1, 1), requirement="r")


def test_pull_request_approval_needs_review_id_and_commit():
    pred = pr_statement().predicate.model_dump(by_alias=True)
    pred["approvers"][0]["reviewId"] = None
    with pytest.raises(ValidationError, match="review id and commit"):
        ApprovalPredicate.model_validate(pred)


def test_pull_request_url_must_match_repository_and_number():
    pred = pr_statement().predicate.model_dump(by_alias=True)
    pred["pullRequest"]["url"] = "https://github.com/evil/ops/pull/42"
    with pytest.raises(ValidationError, match="is not PR #42 of acme/ops"):
        ApprovalPredicate.model_validate(pred)


def test_pull_request_approval_needs_base_and_head():
    pred = pr_statement().predicate.model_dump(by_alias=True)
    pred["headSha"] = None
    with pytest.raises(ValidationError, match="needs base and headSha"):
        ApprovalPredicate.model_validate(pred)


def test_approval_after_evaluation_is_rejected():
    pred = pr_statement().predicate.model_dump(by_alias=True)
    pred["approvers"][0]["approvedAt"] = NOW + timedelta(hours=1)
    with pytest.raises(ValidationError, match="approvedAt is after evaluatedAt"):
        ApprovalPredicate.model_validate(pred)


def test_same_approver_twice_for_one_requirement_is_rejected():
    pred = pr_statement().predicate.model_dump(by_alias=True)
    pred["approvers"] = [pred["approvers"][0], {**pred["approvers"][0], "login": "ALICE"}]
    with pytest.raises(ValidationError, match="listed twice"):
        ApprovalPredicate.model_validate(pred)


@pytest.mark.parametrize("name", ["/etc/passwd", "../plans/x.yaml", "plans//x.yaml", "a\\b", ""])
def test_subject_names_are_repository_relative_paths(name: str):
    with pytest.raises(ValidationError, match="repository-relative"):
        PlanSubject(name=name, digest=DigestSet(sha256=DIGEST))


@pytest.mark.parametrize("digest", ["sha256:abc", "A1" * 32, "sha512:" + "a" * 64])
def test_digest_must_be_plan_digest_hex(digest: str):
    with pytest.raises(ValidationError):
        DigestSet(sha256=digest)


def test_duplicate_subjects_are_rejected():
    with pytest.raises(ValidationError, match="appears once"):
        pr_statement(plans=[(PLAN, DIGEST, None), (PLAN, DIGEST, None)])


def test_unknown_fields_are_rejected():
    data = json.loads(pr_statement().payload())
    data["predicate"]["approvedBy"] = "mallory"
    with pytest.raises(ValidationError):
        ApprovalStatement.model_validate(data)


def test_local_approval_needs_no_pull_request():
    statement = build_statement(
        plans=[(PLAN, DIGEST, None)],
        repository=RepositoryRef(name="local"),
        approvers=[Approver(login="alice", approvedAt=NOW, requirement="local")],
        policy_digest=POLICY,
        evaluated_at=NOW,
        ttl=timedelta(hours=1),
    )
    assert statement.predicate.pull_request is None
    assert "pullRequest" not in json.loads(statement.payload())["predicate"]


def test_storage_paths():
    assert storage_path(42, HEAD, "dsse") == f"pr-42/{HEAD}.dsse.json"
    assert storage_path(7, HEAD, "sigstore") == f"pr-7/{HEAD}.sigstore.json"
    with pytest.raises(ValueError):
        storage_path(7, "abc", "dsse")
    with pytest.raises(ValueError):
        storage_path(7, HEAD, "../x")
    assert local_attestation_path(DIGEST) == f"local/{DIGEST.removeprefix('sha256:')}.dsse.json"


def _models(model: type, seen: set[type]) -> None:
    from pydantic import BaseModel

    seen.add(model)
    for field in model.model_fields.values():
        for arg in _type_args(field.annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel) and arg not in seen:
                _models(arg, seen)


def _type_args(annotation) -> list:
    import typing

    args = typing.get_args(annotation)
    if not args:
        return [annotation]
    return [a for arg in args for a in _type_args(arg)]


def test_statement_fields_are_declared_in_json_key_order():
    """payload() relies on it: pydantic-core writes keys in declaration order."""
    seen: set[type] = set()
    _models(ApprovalStatement, seen)
    assert len(seen) >= 10
    for model in seen:
        names = [f.alias or name for name, f in model.model_fields.items()]
        assert names == sorted(names), model.__name__


_text = st.text(max_size=12)


@settings(max_examples=60, deadline=None)
@given(
    requirement=_text.filter(bool),
    level=st.none() | _text,
    ref=_text.filter(bool),
    cost=st.decimals(min_value=0, max_value=10**9, places=2, allow_nan=False),
    score=st.integers(min_value=0, max_value=2**53 - 1),
    review=st.integers(min_value=1, max_value=2**53 - 1),
    seconds=st.integers(min_value=0, max_value=10**9),
)
def test_payload_is_rfc8785(requirement, level, ref, cost, score, review, seconds):
    import rfc8785

    from app.approvals.attest import BaseRef, CostEstimate, PullRequestRef, Risk

    evaluated = NOW + timedelta(seconds=seconds, microseconds=123)
    statement = build_statement(
        plans=[(PLAN, DIGEST, BLOB), ("plans/\u00e9t\u00e9.yaml", DIGEST, None)],
        repository=RepositoryRef(name=REPO, id=review),
        pull_request=PullRequestRef(number=7, url=f"https://ghe.example/{REPO}/pull/7"),
        base=BaseRef(ref=ref, sha=HEAD),
        head_sha=HEAD,
        approvers=[
            Approver(
                login="alice",
                reviewId=review,
                commit=HEAD,
                approvedAt=evaluated,
                requirement=requirement,
            )
        ],
        policy_digest=POLICY,
        evaluated_at=evaluated,
        ttl=timedelta(minutes=30),
        risk=Risk(score=score, level=level),
        cost=CostEstimate(total=cost),
    )
    payload = statement.payload()
    assert payload == rfc8785.dumps(json.loads(payload))
    assert ApprovalStatement.model_validate_json(payload) == statement
