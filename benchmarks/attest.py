"""Benchmark: sign and verify approval attestations with the local key, next to raw ECDSA.

Run: ``.venv/bin/python benchmarks/attest.py [--count 1000] [--repeat 3]``

Measures in the same process, per operation:

* ``build statement``: ``build_statement`` (pydantic, every invariant checked); this is the
  approval gate's output and is reported on its own, for context;
* ``attest sign``: signing a built statement: canonical (RFC 8785) payload, DSSE PAE, ECDSA
  P-256 signature, envelope JSON (``statement.payload()`` + ``LocalKeySigner.sign``);
* ``attest verify``: the executor's full check (``verify_for_execution``): parse the envelope,
  find the trusted key, ECDSA verify over PAE, parse and validate the statement, subject,
  digest, repository, PR, policy and expiry checks;
* ``raw ECDSA sign`` / ``raw ECDSA verify``: ``cryptography``'s P-256 sign/verify of the same
  payload bytes, the baseline.

Target (issue 6): attest sign/verify within 2x of raw ECDSA sign/verify. The last line also
prints build + sign together (what one new approval costs end to end). Best of ``--repeat``
rounds is reported, in CPU time, with the baseline and the operation interleaved in every
round, so a noisy neighbour does not distort the ratio.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.approvals.attest import (
    INTOTO_PAYLOAD_TYPE,
    Approver,
    BaseRef,
    CostEstimate,
    PullRequestRef,
    RepositoryRef,
    Risk,
    build_statement,
)
from app.approvals.verify import verify_for_execution
from app.signing import Trust, TrustedKey
from app.signing.local_key import LocalKeySigner

TARGET_RATIO = 2.0
NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
REPO = "acme/ops"


def _statement(i: int):
    head = f"{i:040x}"
    return build_statement(
        plans=[(f"plans/plan-{i}.yaml", f"sha256:{i:064x}", f"{i + 1:040x}")],
        repository=RepositoryRef(name=REPO, id=1296269),
        pull_request=PullRequestRef(number=i + 1, url=f"https://github.com/{REPO}/pull/{i + 1}"),
        base=BaseRef(ref="refs/heads/main", sha="e5" * 20),
        head_sha=head,
        approvers=[
            Approver(
                login=login,
                reviewId=1000 + i * 2 + n,
                commit=head,
                approvedAt=NOW - timedelta(minutes=5),
                requirement=req,
            )
            for n, (login, req) in enumerate((("alice", "dba"), ("bob", "sre")))
        ],
        policy_digest="sha256:" + "c3" * 32,
        evaluated_at=NOW,
        ttl=timedelta(days=1),
        risk=Risk(score=70, level="high"),
        cost=CostEstimate(total="12.50"),
    )


def _best_interleaved(fns: list[Callable[[], None]], repeat: int) -> list[float]:
    """Best CPU time (``process_time``) of each function over ``repeat`` rounds, run
    *interleaved* (every round runs each function once). The work is CPU-bound with no I/O, so
    CPU time is the honest measure on a shared 2-core machine where wall time mostly measures
    the neighbours; interleaving keeps cache and frequency effects fair between the baseline
    and the measured operation. The cyclic GC is paused while timing, as ``timeit`` does."""
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            gc.collect()
            gc.disable()
            try:
                start = time.process_time()
                fn()
                best[i] = min(best[i], time.process_time() - start)
            finally:
                gc.enable()
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    n = args.count

    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    trust = Trust(keys=(TrustedKey(public_key_pem=pem, name="bench"),))
    signer = LocalKeySigner(key)
    ecdsa = ec.ECDSA(hashes.SHA256())

    payloads = [_statement(i).payload() for i in range(n)]
    raw_sigs = [key.sign(p, ecdsa) for p in payloads]
    documents: list[bytes] = []

    statements = [_statement(i) for i in range(n)]

    def build() -> None:
        for i in range(n):
            _statement(i)

    def attest_sign() -> None:
        documents.clear()
        for statement in statements:
            documents.append(signer.sign(INTOTO_PAYLOAD_TYPE, statement.payload()))

    def attest_verify() -> None:
        for i, doc in enumerate(documents):
            verify_for_execution(
                f"plans/plan-{i}.yaml",
                f"sha256:{i:064x}",
                doc,
                trust,
                REPO,
                i + 1,
                NOW,
                expected_policy_digest="sha256:" + "c3" * 32,
            )

    def raw_sign() -> None:
        for p in payloads:
            key.sign(p, ecdsa)

    def raw_verify() -> None:
        for p, s in zip(payloads, raw_sigs, strict=True):
            public.verify(s, p, ecdsa)

    attest_sign()  # documents for attest_verify
    t_build, t_raw_sign, t_sign, t_raw_verify, t_verify = _best_interleaved(
        [build, raw_sign, attest_sign, raw_verify, attest_verify], args.repeat
    )

    def per_op(total: float) -> float:
        return total / n * 1e6

    rows = [
        ("build statement", t_build, None),
        ("raw ECDSA sign", t_raw_sign, None),
        ("attest sign", t_sign, t_sign / t_raw_sign),
        ("raw ECDSA verify", t_raw_verify, None),
        ("attest verify", t_verify, t_verify / t_raw_verify),
    ]
    print(f"{n} attestations, best of {args.repeat}, CPU time (ECDSA P-256, SHA-256)")
    print(f"{'operation':<18} {'total ms':>10} {'per op us':>10} {'vs raw':>8}")
    for name, total, ratio in rows:
        rel = f"{ratio:.2f}x" if ratio is not None else ""
        print(f"{name:<18} {total * 1e3:>10.1f} {per_op(total):>10.1f} {rel:>8}")
    ok = t_sign / t_raw_sign <= TARGET_RATIO and t_verify / t_raw_verify <= TARGET_RATIO
    print(f"target: within {TARGET_RATIO:.0f}x of raw ECDSA: {'met' if ok else 'NOT met'}")
    print(
        f"build + sign (a new approval end to end): {per_op(t_build + t_sign):.1f} us/op, "
        f"{(t_build + t_sign) / t_raw_sign:.2f}x raw sign"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
