"""Builders shared by the attestation and verification tests (no tests here; no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from app.approvals.attest import (
    ApprovalStatement,
    Approver,
    BaseRef,
    CostEstimate,
    PullRequestRef,
    RepositoryRef,
    Risk,
    build_statement,
)
from app.signing import Trust, TrustedKey

NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
REPO = "acme/ops"
PLAN = "plans/db.yaml"
DIGEST = "sha256:" + "a1" * 32
OTHER_DIGEST = "sha256:" + "b2" * 32
POLICY = "sha256:" + "c3" * 32
HEAD = "d4" * 20
BASE = "e5" * 20
BLOB = "f6" * 20


def pr_statement(
    *,
    repo: str = REPO,
    pr: int = 42,
    plans: list[tuple[str, str, str | None]] | None = None,
    evaluated_at: datetime = NOW,
    ttl: timedelta = timedelta(days=1),
    policy: str = POLICY,
    head: str = HEAD,
    repo_id: int | None = 1296269,
) -> ApprovalStatement:
    return build_statement(
        plans=plans or [(PLAN, DIGEST, BLOB)],
        repository=RepositoryRef(name=repo, id=repo_id, url=f"https://github.com/{repo}"),
        pull_request=PullRequestRef(number=pr, url=f"https://github.com/{repo}/pull/{pr}"),
        base=BaseRef(ref="refs/heads/main", sha=BASE),
        head_sha=head,
        approvers=[
            Approver(
                login="alice",
                reviewId=80,
                commit=head,
                approvedAt=evaluated_at - timedelta(minutes=5),
                requirement="dba-review",
            ),
            Approver(
                login="bob",
                reviewId=81,
                commit=head,
                approvedAt=evaluated_at - timedelta(minutes=3),
                requirement="sre-review",
            ),
        ],
        policy_digest=policy,
        evaluated_at=evaluated_at,
        ttl=ttl,
        risk=Risk(score=70, level="high"),
        cost=CostEstimate(total="12.50"),
    )


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def trust_for(*keys: ec.EllipticCurvePrivateKey) -> Trust:
    return Trust(
        keys=tuple(
            TrustedKey(
                public_key_pem=k.public_key()
                .public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
                .decode(),
                name=f"key{i}",
            )
            for i, k in enumerate(keys)
        )
    )
