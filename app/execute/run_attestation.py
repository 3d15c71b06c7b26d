"""Sign what ran and record it in the audit trail: shared by ``plangate run`` and ``execute``.

The statement itself is pure (``app.approvals.run_attest``); this module adds the two edges
both entry points need: signing with whatever ``Signer`` the caller chose (local key or keyless
sigstore), and the ``run.attested`` audit event that ties the run's hash-chained events to the
signed document (its sha256 and where it is stored), so ``plangate audit`` shows for every run
where its attestation is and the audit chain vouches for the exact bytes.

Attesting never changes a run's outcome: callers report failures as warnings.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.approvals.run_attest import RunStatement, sign_run_statement, statement_from_result
from app.audit.events import Actor, AuditEventDraft
from app.audit.store import AuditStore
from app.execute.result import RunResult
from app.signing.base import Signer

__all__ = ["SignedRun", "record_attested", "sign_run"]


@dataclass(frozen=True, slots=True)
class SignedRun:
    statement: RunStatement
    document: bytes
    kind: str

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.document).hexdigest()


def sign_run(
    result: RunResult,
    signer: Signer,
    *,
    plan_path: str,
    started_at: datetime,
    finished_at: datetime,
    approval: str | None,
    invocation: dict[str, Any] | None = None,
) -> SignedRun:
    statement = statement_from_result(
        result,
        plan_path=plan_path,
        started_at=started_at,
        finished_at=finished_at,
        approval=approval,
        invocation=invocation,
    )
    document = sign_run_statement(statement, signer)
    return SignedRun(statement=statement, document=document, kind=signer.kind)


def record_attested(
    store: AuditStore,
    signed: SignedRun,
    *,
    location: str,
    actor: Actor,
    now: Callable[[], datetime],
    team: str | None = None,
    environment: str | None = None,
) -> None:
    """Append (and commit) the ``run.attested`` event for ``signed``."""
    pred = signed.statement.predicate
    subject = signed.statement.subject[0]
    store.append(
        [
            AuditEventDraft(
                type="run.attested",
                timestamp=now(),
                actor=actor,
                correlation_id=pred.run_id,
                plan_id=pred.plan_id,
                plan_digest="sha256:" + subject.digest.sha256,
                inputs_digest=signed.digest,
                team=team,
                environment=environment,
                payload={
                    "status": pred.status,
                    "location": location,
                    "attestation_digest": signed.digest,
                    "approval_digest": pred.approval_digest,
                    "kind": signed.kind,
                    "predicate_type": signed.statement.predicate_type,
                },
            )
        ]
    )
    store.commit(f"run {pred.run_id} attested")
