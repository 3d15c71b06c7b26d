"""Carry the executor's SQLite state from one Actions workflow run to the next, signed.

Why: a GitHub-hosted runner starts with an empty disk, so without this a re-run of the workflow
(or the merge of a pull request that raises a paused plan's budget) would find no record of what
already ran, and run completed steps again. With a shared PostgreSQL (``PLANGATE_DATABASE_URL``)
there is nothing to carry; this is the embedded default's answer.

How: at the end of ``plangate execute`` a consistent copy of ``state.db`` (SQLite's online
backup API, so a WAL in flight is included) is stored on the attestation branch at
``state/state.sqlite.gz`` (gzip: SQLite pages compress well), with an in-toto statement naming
its sha256, signed by the executor's
own signer (``state/state.sqlite.gz.<kind>.json``). It is read back through the git blob API
(the contents API stops at 1 MB). At the start of the next run, on a runner
without local state, the copy is restored **only if** the statement verifies against the
executor's trust (its own key, or its own workflow identity for keyless) and the bytes match
the signed digest. A state file anyone could write would let them mark steps done (skipped) or
inject step outputs into later steps' inputs, so an unsigned or mismatching copy is refused and
the run starts from nothing (the check run says so).

Pure helpers plus two tiny file operations (the backup copy and the restore); the branch I/O
and signing are passed in by ``app/cli/execute.py``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from app.approvals.attest import INTOTO_PAYLOAD_TYPE, STATEMENT_TYPE
from app.errors import AttestationError
from app.plan.digest import canonical_json

__all__ = [
    "STATE_PATH",
    "STATE_PREDICATE_TYPE",
    "check_state",
    "snapshot",
    "state_statement",
    "unpack",
]

STATE_PATH = "state/state.sqlite.gz"
STATE_PREDICATE_TYPE = "https://plangate.dev/attestations/executor-state/v1"


def snapshot(db: Path) -> bytes:
    """A consistent, gzipped copy of the SQLite database at ``db`` (online backup; WAL
    included). ``mtime=0``: the same state gives the same bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "copy.db"
        src = sqlite3.connect(db)
        dst = sqlite3.connect(copy)
        try:
            src.backup(dst)
        finally:
            dst.close()
            src.close()
        return gzip.compress(copy.read_bytes(), mtime=0)


def unpack(blob: bytes) -> bytes:
    """The SQLite bytes of a verified ``snapshot``."""
    return gzip.decompress(blob)


def state_statement(blob: bytes, *, repository: str, commit: str, workflow_run: str) -> bytes:
    """The payload to sign: an in-toto statement whose subject is the state copy."""
    return canonical_json(
        {
            "_type": STATEMENT_TYPE,
            "subject": [
                {"name": STATE_PATH, "digest": {"sha256": hashlib.sha256(blob).hexdigest()}}
            ],
            "predicateType": STATE_PREDICATE_TYPE,
            "predicate": {"repository": repository, "commit": commit, "workflowRun": workflow_run},
        }
    )


def check_state(blob: bytes, payload_type: str, payload: bytes, *, repository: str) -> None:
    """The verified statement (signature already checked) must name exactly ``blob``."""
    source = f"{STATE_PATH} statement"
    if payload_type != INTOTO_PAYLOAD_TYPE:
        raise AttestationError(f"{source}: not an in-toto statement", check="payload_type")
    try:
        data: Any = json.loads(payload)
        subject = data["subject"][0]
        predicate = data["predicate"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise AttestationError(f"{source}: malformed", check="statement") from exc
    if data.get("predicateType") != STATE_PREDICATE_TYPE or subject.get("name") != STATE_PATH:
        raise AttestationError(f"{source}: not an executor-state statement", check="statement")
    if str(predicate.get("repository", "")).lower() != repository.lower():
        raise AttestationError(
            f"{source}: made for {predicate.get('repository')!r}, not {repository!r}",
            check="repository",
        )
    digest = hashlib.sha256(blob).hexdigest()
    if subject.get("digest", {}).get("sha256") != digest:
        raise AttestationError(
            f"{source}: the stored state (sha256 {digest[:16]}...) is not the signed one",
            check="digest",
            hint="someone changed state/state.sqlite on the attestation branch; the run starts "
            "without the carried state (see docs/runbooks.md)",
        )
