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

Keyless (``KeylessApprovalAttester``, ``PLANGATE_APPROVAL_BACKEND=keyless``): the App cannot
hold a workflow's OIDC identity, so step 3 happens in ``.github/workflows/plangate-approve.yml``
on the default branch. The App sends a ``repository_dispatch`` and holds the check; the
workflow runs this very class (``plangate attest --pr``, with a ``SigstoreSigner``) and stores
the bundle; the App then finds it, verifies it against the pinned workflow identity and renders
``success``. One statement builder and one reuse rule serve both sides.

Fail closed: without a signer (``AttestationsNotConfigured``) a satisfied gate stays
``action_required`` and says why; a signing failure does too. GitHub errors propagate (the
worker retries the delivery), so a half-done attestation never reports ``success``.
"""

from __future__ import annotations

import logging
import threading
import time
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
from app.errors import AttestationError, GitHubError, PlangateError, RateLimited
from app.github.attestations import AttestationStore, StoredAttestation
from app.github.checks import CheckOutcome
from app.github.client import ChangedFile, PullRequestInfo, RepoClient, pull_info
from app.signing import verify_signed_document
from app.signing.base import SignatureVerifier, Signer, Trust, github_workflow_identity

if TYPE_CHECKING:
    from app.server.evaluate import EvaluationRequest

__all__ = [
    "DEFAULT_TTL",
    "DISPATCH_EVENT",
    "ApprovalAttester",
    "ApprovalFacts",
    "AttestationsNotConfigured",
    "Attester",
    "KeylessApprovalAttester",
    "dispatch_approval",
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
        sigstore_verifier: SignatureVerifier | None = None,
        workflow_file: str | None = None,
    ) -> None:
        if ttl <= timedelta(0):
            raise ValueError("attestation ttl must be positive")
        if workflow_file is not None:
            github_workflow_identity("o/r", workflow_file, "main")  # a bad name fails early
        #: keyless: the approval workflow's file; its pinned identity on the repository's
        #: default branch (with the repository id) is whose stored bundle may be reused
        self.workflow_file = workflow_file
        self.signer = signer
        #: checks stored sigstore bundles (default: the trusted root shipped in the wheel)
        self.sigstore_verifier = sigstore_verifier
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
        latest, repo_id, default_branch = _latest_pull(client, pull.number)
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
        trust = self.trust_for(client, repo_id=repo_id, default_branch=default_branch)
        reused = self._reusable(store, path, statement, trust)
        if reused is not None:
            return self._success(gate, *reused)
        return self.produce(client, pull, gate, statement, store=store, path=path)

    def trust_for(
        self, client: RepoClient, *, repo_id: int | None, default_branch: str | None
    ) -> Trust | None:
        """Whose stored attestation of this head may be reused (the signer's own identity)."""
        if self.workflow_file is None:
            return self.trust
        branch = default_branch or client.default_branch()
        return Trust(
            identities=(
                github_workflow_identity(
                    client.full_name,
                    self.workflow_file,
                    branch,
                    repository_id=repo_id,
                    server_url=self.web_url,
                ),
            )
        )

    def produce(
        self,
        client: RepoClient,
        pull: PullRequestInfo,
        gate: GateResult,
        statement: ApprovalStatement,
        *,
        store: AttestationStore,
        path: str,
    ) -> CheckOutcome:
        """Sign ``statement`` and store it at ``path``; ``success`` only once stored."""
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
        self,
        store: AttestationStore,
        path: str,
        statement: ApprovalStatement,
        trust: Trust | None,
    ) -> tuple[ApprovalStatement, StoredAttestation] | None:
        """The stored attestation of this head, if it is ours and records the same approval.

        Same = identical except evaluation time and expiry, with at least half of the ttl
        left. Anything else (another approver, another policy, unreadable, not ours) is
        replaced by a fresh one.
        """
        if trust is None or trust.empty:
            return None
        tip = store.head()
        document = store.read(path, at=tip) if tip else None
        if tip is None or document is None:
            return None
        try:
            signed = verify_signed_document(
                document, trust, source=path, sigstore_verifier=self.sigstore_verifier
            )
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


#: ``repository_dispatch`` event type the approval workflow listens to
DISPATCH_EVENT = "plangate-approve"
DEFAULT_WORKFLOW = "plangate-approve.yml"


class _WorkflowSigns:
    """The keyless attester's ``Signer`` slot: the App itself never signs keylessly."""

    kind = "sigstore"

    def sign(self, payload_type: str, payload: bytes) -> bytes:  # pragma: no cover - guard
        raise AttestationError(
            "keyless approvals are signed by the approval workflow, not by the App",
            check="sign",
        )


class KeylessApprovalAttester(ApprovalAttester):
    """Keyless backend, App side: the approval workflow signs; the App dispatches and checks.

    Same statement and reuse rule as ``ApprovalAttester`` (this *is* one): when the gate is
    satisfied the App looks for ``pr-<N>/<head>.sigstore.json`` on the attestation branch. If
    it verifies against the pinned identity of ``.github/workflows/<workflow>`` on the
    repository's default branch (SAN, issuer, source repository URI and id) and records the
    same approval, the check turns ``success``. Otherwise the App sends a
    ``repository_dispatch`` (``event_type: plangate-approve``, ``client_payload: {pr,
    head_sha}``), which GitHub runs from the default branch only, and holds the check at
    ``action_required`` until the workflow's push to the attestation branch brings the App
    back (``push`` handler). The workflow re-evaluates the gate itself; the payload is only a
    hint of which pull request to look at.

    Dispatches for one head are sent at most once per ``redispatch_after`` seconds (a burst
    of reviews does not start a burst of workflows; a lost run is retried on a later event).
    With ``claims`` (the server passes its inbox, SQLite or PostgreSQL) the limit is claimed
    atomically in that shared store, so several replicas still send one dispatch per head per
    window; ``clock`` must then be wall-clock time. Without, it is held in this process.
    """

    def __init__(
        self,
        *,
        workflow_file: str = DEFAULT_WORKFLOW,
        web_url: str = "https://github.com",
        ttl: timedelta = DEFAULT_TTL,
        store_for: Callable[[RepoClient], AttestationStore] = AttestationStore,
        sigstore_verifier: SignatureVerifier | None = None,
        clock: Callable[[], float] = time.monotonic,
        redispatch_after: float = 600.0,
        claims: DispatchClaims | None = None,
    ) -> None:
        super().__init__(
            _WorkflowSigns(),
            web_url=web_url,
            ttl=ttl,
            store_for=store_for,
            sigstore_verifier=sigstore_verifier,
            workflow_file=workflow_file,
        )
        self.workflow_file: str = workflow_file
        self.clock = clock
        self.redispatch_after = redispatch_after
        self.claims: DispatchClaims = claims or _ProcessClaims()

    def produce(
        self,
        client: RepoClient,
        pull: PullRequestInfo,
        gate: GateResult,
        statement: ApprovalStatement,
        *,
        store: AttestationStore,
        path: str,
    ) -> CheckOutcome:
        key = f"approval-dispatch:{client.full_name}#{pull.number}@{pull.head_sha}"
        now = self.clock()
        due = self.claims.claim_once(key, now=now, every=self.redispatch_after)
        if due:
            try:
                dispatch_approval(client, pull.number, pull.head_sha)
            except RateLimited:
                self.claims.release_claim(key, at=now)
                raise
            except GitHubError as exc:
                self.claims.release_claim(key, at=now)
                if exc.status not in (403, 404, 422):
                    raise
                return _held(
                    gate,
                    "Approved, but the approval workflow could not be started",
                    f"GitHub refused the `repository_dispatch` that starts "
                    f"`.github/workflows/{self.workflow_file}`: {exc}\n\n"
                    "Operators: the App needs **Contents: write** to send it (see "
                    "docs/attestations.md, keyless signing).",
                )
        return _held(
            gate,
            "Approved; signing in the approval workflow",
            f"The approval requirements are met. The keyless approval attestation is signed by "
            f"`.github/workflows/{self.workflow_file}` on the default branch "
            f"({'started now' if due else 'already started'}); this check turns `success` "
            f"once `{path}` is stored on the attestation branch.",
        )


class DispatchClaims(Protocol):
    """Where the re-dispatch limit is held (``InboxStore`` implements it: shared by replicas)."""

    def claim_once(self, key: str, *, now: float, every: float) -> bool: ...

    def release_claim(self, key: str, *, at: float) -> None: ...


class _ProcessClaims:
    """``DispatchClaims`` in this process's memory (one server, or tests)."""

    def __init__(self) -> None:
        self._at: dict[str, float] = {}
        self._lock = threading.Lock()

    def claim_once(self, key: str, *, now: float, every: float) -> bool:
        with self._lock:
            last = self._at.get(key)
            if last is not None and now - last < every:
                return False
            self._at[key] = now
            return True

    def release_claim(self, key: str, *, at: float) -> None:
        with self._lock:
            if self._at.get(key) == at:
                del self._at[key]


def dispatch_approval(client: RepoClient, number: int, head_sha: str) -> None:
    """``POST /repos/{owner}/{repo}/dispatches``: start the approval workflow (default branch).

    GitHub docs: "Create a repository dispatch event" (204; needs Contents: write).
    """
    owner, _, name = client.full_name.partition("/")
    client.transport.request(
        "POST",
        f"/repos/{quote(owner)}/{quote(name)}/dispatches",
        body={"event_type": DISPATCH_EVENT, "client_payload": {"pr": number, "head_sha": head_sha}},
    )


def _latest_pull(client: RepoClient, number: int) -> tuple[PullRequestInfo, int | None, str | None]:
    """The pull request as it is now, plus the repository's immutable id (binds the
    attestation to the repository across renames; the executor checks it) and default branch
    (when the payload names it)."""
    owner, _, name = client.full_name.partition("/")
    data = client.transport.request("GET", f"/repos/{quote(owner)}/{quote(name)}/pulls/{number}")
    repo = ((data.data or {}).get("base") or {}).get("repo") or {}
    repo_id = repo.get("id")
    default = repo.get("default_branch")
    return (
        pull_info(data.data),
        repo_id if type(repo_id) is int and repo_id > 0 else None,
        default if isinstance(default, str) and default else None,
    )


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
