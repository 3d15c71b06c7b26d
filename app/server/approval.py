"""From a satisfied approval gate to ``plangate/approval`` = ``success``: attest, sign, store.

The gate (``app.approvals.gate``) decides whether the right people approved; this module makes
that decision durable and verifiable before GitHub is told. Order matters and is the point:

1. the gate result must be for the head and base the check run is published on
   (``GateResult.is_current``), and the pull request must still be at that head when we look
   again right before signing (a push during the evaluation: attest nothing, the
   ``synchronize`` delivery of the new head re-evaluates);
2. build the in-toto statement (``app.approvals.attest.build_statement``): every changed plan
   with its plan digest and git blob SHA, the counted approvers, policy digest, risk, cost,
   evaluation time and expiry;
3. sign it with the server's ``Signer`` (local key: ``PLANGATE_SIGNING_KEY_PATH``);
4. store it on the bot-only branch (``app.github.attestations``);
5. only then render ``success``.

Fail closed: without a signer (``AttestationsNotConfigured``) a satisfied gate stays
``action_required`` and says why; a signing failure does too. GitHub errors propagate (the
worker retries the delivery), so a half-done attestation never reports ``success``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Protocol
from urllib.parse import quote

from app.approvals.attest import (
    INTOTO_PAYLOAD_TYPE,
    ApprovalStatement,
    BaseRef,
    CostEstimate,
    PullRequestRef,
    RepositoryRef,
    Risk,
    build_statement,
    storage_path,
)
from app.approvals.gate import GateResult, short_sha, to_attestation_approvers
from app.approvals.render import check_run_output
from app.approvals.verify import parse_statement
from app.errors import GitHubError, PlangateError, RateLimited
from app.github.attestations import AttestationStore, StoredAttestation
from app.github.checks import CheckOutcome
from app.github.client import ChangedFile, PullRequestInfo, RepoClient, pull_info
from app.signing import verify_signed_document
from app.signing.base import Signer, Trust

if TYPE_CHECKING:
    from app.server.evaluate import EvaluationRequest

__all__ = [
    "DEFAULT_TTL",
    "ApprovalAttester",
    "ApprovalFacts",
    "AttestationsNotConfigured",
    "Attester",
    "web_url_for",
]

log = logging.getLogger(__name__)

#: how long after the evaluation the executor accepts the approval (docs/attestations.md)
DEFAULT_TTL = timedelta(days=7)
NAME = "plangate/approval"

NOT_CONFIGURED = (
    "The approval requirements are met, but **attestations are not configured** on this "
    "server, so the approval cannot be signed and stored, and this check cannot pass. "
    "Plangate fails closed: an approval the executor cannot verify is no approval.\n\n"
    "Operators: set `PLANGATE_SIGNING_KEY_PATH` to a key made with `plangate keygen` and "
    "list its public half as a signer in the default branch's policy (see docs/github-app.md)."
)


@dataclass(frozen=True, slots=True)
class ApprovalFacts:
    """What an evaluator knows that the attestation records, besides the pull request."""

    gate: GateResult
    policy_digest: str
    risk: Risk | None = None
    cost: CostEstimate | None = None


class Attester(Protocol):
    """Turns the evaluator's approval outcome into the published one.

    Returns ``approval`` unchanged unless the gate is satisfied; then ``success`` only after
    the attestation is stored. May raise ``GitHubError`` (the delivery is retried).
    """

    def finalize(
        self,
        client: RepoClient,
        pull: PullRequestInfo,
        request: EvaluationRequest,
        facts: ApprovalFacts,
        *,
        approval: CheckOutcome,
        files: Sequence[ChangedFile],
    ) -> CheckOutcome: ...


def _held(gate: GateResult, title: str, why: str) -> CheckOutcome:
    out = check_run_output(gate, attestation_stored=False)
    return CheckOutcome(NAME, "action_required", title, f"{why}\n\n{out.summary}", out.text)


class AttestationsNotConfigured:
    """The default ``Attester``: no signer, so a satisfied gate is held at ``action_required``."""

    def finalize(
        self,
        client: RepoClient,
        pull: PullRequestInfo,
        request: EvaluationRequest,
        facts: ApprovalFacts,
        *,
        approval: CheckOutcome,
        files: Sequence[ChangedFile],
    ) -> CheckOutcome:
        if not facts.gate.satisfied:
            return approval
        return _held(facts.gate, "Approved, but attestations are not configured", NOT_CONFIGURED)


def web_url_for(api_url: str) -> str:
    """GitHub's web URL for an API URL: api.github.com -> github.com, GHES /api/v3 -> host."""
    url = api_url.rstrip("/")
    if url in ("https://api.github.com", "http://api.github.com"):
        return "https://github.com"
    return url.removesuffix("/api/v3")


class ApprovalAttester:
    """Signs and stores the approval attestation of a satisfied gate (see the module doc).

    ``store_for`` builds the ``AttestationStore`` of a repository (tests inject one with a
    recording fake or a zero-time sleep).
    """

    def __init__(
        self,
        signer: Signer,
        *,
        web_url: str = "https://github.com",
        ttl: timedelta = DEFAULT_TTL,
        store_for: Callable[[RepoClient], AttestationStore] = AttestationStore,
        trust: Trust | None = None,
    ) -> None:
        if ttl <= timedelta(0):
            raise ValueError("attestation ttl must be positive")
        self.signer = signer
        #: the signer's own public half: an attestation already stored for this head that
        #: verifies with it and says the same is reused instead of re-signed (no branch churn)
        self.trust = trust
        self.web_url = web_url.rstrip("/")
        self.ttl = ttl
        self.store_for = store_for

    def finalize(
        self,
        client: RepoClient,
        pull: PullRequestInfo,
        request: EvaluationRequest,
        facts: ApprovalFacts,
        *,
        approval: CheckOutcome,
        files: Sequence[ChangedFile],
    ) -> CheckOutcome:
        gate = facts.gate
        if not gate.satisfied:
            return approval
        if not gate.is_current(
            head_sha=pull.head_sha, base_ref=f"refs/heads/{pull.base_ref}", base_sha=pull.base_sha
        ):
            return _held(
                gate,
                "Approved, but for another head or base (re-evaluating)",
                f"The gate was evaluated for {short_sha(gate.head_sha)} on {gate.base_ref}, but "
                f"this check is for {short_sha(pull.head_sha)} on {pull.base_ref}; nothing was "
                "attested. The pull request is evaluated again.",
            )
        # a push may have landed while we evaluated: attest only the head we judged
        latest, repo_id = _latest_pull(client, pull.number)
        if latest.head_sha != pull.head_sha or latest.base_ref != pull.base_ref:
            return _held(
                gate,
                f"Superseded by {short_sha(latest.head_sha)} (re-evaluating)",
                f"The pull request moved to {short_sha(latest.head_sha)} on {latest.base_ref} "
                f"while {short_sha(pull.head_sha)} was evaluated; no attestation was made for "
                f"{short_sha(pull.head_sha)}. The new head is evaluated on its own.",
            )
        if latest.state != "open":
            return _held(gate, "Pull request is not open", "Closed pull requests are not attested.")
        try:
            statement = self.statement(
                client.full_name, pull, request, facts, files, repo_id=repo_id
            )
            path = storage_path(pull.number, pull.head_sha, self.signer.kind)
        except ValueError as exc:  # fail closed, and say why
            return _held(gate, "Approved, but the attestation could not be built", str(exc))
        store = self.store_for(client)
        reused = self._reusable(store, path, statement)
        if reused is not None:
            return self._success(gate, *reused)
        try:
            document = self.signer.sign(INTOTO_PAYLOAD_TYPE, statement.payload())
        except GitHubError:
            raise
        except PlangateError as exc:  # fail closed, and say why
            log.warning("cannot sign for %s#%s: %s", client.full_name, pull.number, exc)
            return _held(
                gate, "Approved, but the attestation could not be signed", exc.diagnostics()
            )
        try:
            stored = store.store(
                path,
                document,
                message=f"Approval attestation for #{pull.number} at {pull.head_sha}",
            )
        except RateLimited:
            raise  # transient: the worker retries the delivery
        except GitHubError as exc:
            if exc.status not in (403, 404, 409, 422):
                raise  # 5xx, network: transient, retried
            # refused for good (permissions, branch protection): say so instead of retrying
            log.warning("cannot store attestation on %s: %s", client.full_name, exc)
            return _held(
                gate,
                "Approved, but the attestation could not be stored",
                f"GitHub refused to store `{path}` on the attestation branch: {exc}\n\n"
                "Operators: the App needs **Contents: write** and the ruleset protecting the "
                "attestation branch must let the App push (see docs/github-app.md).",
            )
        return self._success(gate, statement, stored)

    def _reusable(
        self, store: AttestationStore, path: str, statement: ApprovalStatement
    ) -> tuple[ApprovalStatement, StoredAttestation] | None:
        """The stored attestation of this head, if it is ours and records the same approval.

        Same = identical except evaluation time and expiry, with at least half of the ttl
        left. Anything else (another approver, another policy, unreadable, not ours) is
        replaced by a fresh one.
        """
        if self.trust is None or self.trust.empty:
            return None
        tip = store.head()
        document = store.read(path, at=tip) if tip else None
        if tip is None or document is None:
            return None
        try:
            signed = verify_signed_document(document, self.trust, source=path)
            old = parse_statement(signed.payload_type, signed.payload, source=path)
        except PlangateError:
            return None
        now = statement.predicate.evaluated_at
        if old.predicate.expires_at - now < self.ttl / 2 or _essence(old) != _essence(statement):
            return None
        return old, StoredAttestation(store.branch, path, tip, created=False)

    def statement(
        self,
        repo: str,
        pull: PullRequestInfo,
        request: EvaluationRequest,
        facts: ApprovalFacts,
        files: Sequence[ChangedFile],
        *,
        repo_id: int | None = None,
    ) -> ApprovalStatement:
        blobs: Mapping[str, str | None] = {f.path: f.blob_sha for f in files}
        return build_statement(
            plans=[(p.path, p.digest, blobs.get(p.path)) for p in request.plans],
            repository=RepositoryRef(name=repo, id=repo_id, url=f"{self.web_url}/{repo}"),
            approvers=to_attestation_approvers(facts.gate),
            policy_digest=facts.policy_digest,
            evaluated_at=facts.gate.evaluated_at,
            ttl=self.ttl,
            pull_request=PullRequestRef(
                number=pull.number, url=f"{self.web_url}/{repo}/pull/{pull.number}"
            ),
            base=BaseRef(ref=f"refs/heads/{pull.base_ref}", sha=pull.base_sha),
            head_sha=pull.head_sha,
            risk=facts.risk,
            cost=facts.cost,
        )

    def _success(
        self, gate: GateResult, statement: ApprovalStatement, stored: StoredAttestation
    ) -> CheckOutcome:
        out = check_run_output(gate, attestation_stored=True)
        pred = statement.predicate
        note = (
            f"Signed approval attestation stored on branch `{stored.branch}` as "
            f"`{stored.path}` (commit {short_sha(stored.commit_sha)}); valid until "
            f"{pred.expires_at:%Y-%m-%dT%H:%M:%SZ}."
        )
        return CheckOutcome(NAME, out.conclusion, out.title, f"{note}\n\n{out.summary}", out.text)


def _latest_pull(client: RepoClient, number: int) -> tuple[PullRequestInfo, int | None]:
    """The pull request as it is now, plus the repository's immutable id (binds the
    attestation to the repository across renames; the executor checks it)."""
    owner, _, name = client.full_name.partition("/")
    data = client.transport.request("GET", f"/repos/{quote(owner)}/{quote(name)}/pulls/{number}")
    repo = ((data.data or {}).get("base") or {}).get("repo") or {}
    repo_id = repo.get("id")
    return pull_info(data.data), repo_id if type(repo_id) is int and repo_id > 0 else None


def _essence(statement: ApprovalStatement) -> dict[str, object]:
    data = statement.to_json_dict()
    predicate = dict(data["predicate"])  # type: ignore[call-overload]
    predicate.pop("evaluatedAt", None)
    predicate.pop("expiresAt", None)
    return {**data, "predicate": predicate}


def combine_risk(risks: Sequence[Risk | None]) -> Risk | None:
    """The riskiest plan's risk (the attestation covers all plans of the pull request)."""
    known = [r for r in risks if r is not None]
    return max(known, key=lambda r: r.score) if known else None


def combine_cost(costs: Sequence[tuple[Decimal, str]]) -> CostEstimate | None:
    """Total estimated cost; None when there is none or the currencies differ."""
    if not costs or len({c for _, c in costs}) != 1:
        return None
    return CostEstimate(total=sum((m for m, _ in costs), Decimal(0)), currency=costs[0][1])
