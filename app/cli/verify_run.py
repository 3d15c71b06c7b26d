"""``plangate verify PLAN --run RUN_ID``: check the run attestation beside the approval.

The approval was verified first (``app/cli/attest.py``); this reads the run attestation
(``--run-attestation FILE``, else ``<dir>/local/<plan digest>.run-<RUN_ID>.<kind>.json``) and
verifies its signature against the same trust, its plan digest and path, the run id and that it
names the approval document just verified (``app.approvals.run_verify``). Failures are
``AttestationError`` (exit 1, the check named).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from app.approvals.run_attest import VerifiedRun, run_attestation_path
from app.approvals.run_verify import verify_run_attestation
from app.errors import AttestationError
from app.plan.loader import LoadedPlan
from app.signing import Trust

__all__ = ["verify_local_run"]


def _read(args: argparse.Namespace, loaded: LoadedPlan) -> tuple[Path, bytes]:
    if args.run_attestation is not None:
        candidates = [args.run_attestation]
    else:
        candidates = [
            args.dir / run_attestation_path(loaded.digest, args.run, kind)
            for kind in ("sigstore", "dsse")
        ]
    for path in candidates:
        try:
            return path, path.read_bytes()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise AttestationError(
                f"{path}: cannot read the run attestation ({exc.strerror})", check="missing"
            ) from exc
    raise AttestationError(
        f"no run attestation for run {args.run!r} of {loaded.path} (looked for "
        + ", ".join(str(p) for p in candidates)
        + ")",
        check="missing",
        hint="`plangate run` writes it when a signing key exists; `plangate audit list --plan "
        f"{loaded.plan.id}` shows the plan's run ids",
    )


def verify_local_run(
    args: argparse.Namespace,
    loaded: LoadedPlan,
    trust: Trust,
    approval_document: bytes,
    plan_path: str,
) -> VerifiedRun:
    path, document = _read(args, loaded)
    return verify_run_attestation(
        document,
        trust,
        plan_digest=loaded.digest,
        plan_path=plan_path,
        approval_document=approval_document,
        run_id=args.run,
        source=str(path),
    )
