"""Where local approvals live, and the executor's approval gate for the local embedded default.

``plangate attest`` (local key) writes ``<dir>/local/<plan-digest>.dsse.json``; the lookup is by
plan digest, so an edited plan simply has no attestation. ``LocalAttestationGate`` implements the
executor's ``ApprovalGate`` port (``app.execute.ports``) on top of it: it reads the file and runs
exactly the checks of ``verify_for_execution``. File I/O lives here, at the edge; the checks
stay pure. Pull-request approvals are read from the ``plangate-attestations`` branch by the
GitHub adapter instead.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from app.approvals.attest import local_attestation_path
from app.approvals.verify import VerifiedApproval, verify_for_execution
from app.errors import AttestationError
from app.signing.base import Trust

__all__ = ["DEFAULT_ATTESTATION_DIR", "LocalAttestationGate", "read_local", "write_local"]

DEFAULT_ATTESTATION_DIR = Path(".plangate/attestations")


def write_local(directory: Path, plan_digest: str, kind: str, document: bytes) -> Path:
    """Store a local attestation atomically (a reader never sees half a file)."""
    path = Path(directory) / local_attestation_path(plan_digest, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(document)
    tmp.replace(path)
    return path


def read_local(directory: Path, plan_digest: str, *, plan: str = "plan") -> tuple[Path, bytes]:
    """The local attestation for ``plan_digest``; ``AttestationError(check="missing")`` if none."""
    path = Path(directory) / local_attestation_path(plan_digest)
    try:
        return path, path.read_bytes()
    except OSError as exc:
        raise AttestationError(
            f"{plan}: no approval attestation for plan digest {plan_digest} ({path}: "
            f"{exc.strerror})",
            check="missing",
            hint="if the plan changed since it was approved it must be approved again; approve "
            "it with `plangate attest PLAN --approver LOGIN` (local) or on its pull request",
        ) from exc


class LocalAttestationGate:
    """``ApprovalGate`` for local plans: verified local attestation or no mutation.

    ``trust`` must come from the executor's configuration (for the local default: the public
    key ``plangate keygen`` wrote). ``clock`` is injected so tests control expiry.
    """

    def __init__(
        self,
        *,
        plan_path: str,
        trust: Trust,
        clock: Callable[[], datetime],
        directory: Path = DEFAULT_ATTESTATION_DIR,
        expected_repo: str = "local",
        expected_policy_digest: str | None = None,
    ) -> None:
        self._plan_path = plan_path
        self._trust = trust
        self._clock = clock
        self._directory = Path(directory)
        self._repo = expected_repo
        self._policy_digest = expected_policy_digest
        #: the last successful verification, for audit events
        self.last: VerifiedApproval | None = None

    def verify(self, plan: Any, digest: str) -> str:
        path, document = read_local(self._directory, digest, plan=self._plan_path)
        self.last = verify_for_execution(
            self._plan_path,
            digest,
            document,
            self._trust,
            self._repo,
            None,
            self._clock(),
            expected_policy_digest=self._policy_digest,
            source=str(path),
        )
        return self.last.summary()
