"""Custom deployment protection rule: GitHub's second lock in front of the executing job.

The Actions job that executes plans runs in an environment protected by the Plangate App. On
``deployment_protection_rule``/``requested`` GitHub asks the App; we answer through the
``deployment_callback_url`` with ``approved`` only when, for the pull request merged as the
deployed commit, **every** plan it changed has a stored attestation that verifies with
``app.approvals.verify.verify_for_execution``:

- the plan as it stands in the deployed (merge) commit has the attested digest;
- the attestation names this repository, that pull request and its head commit;
- it is signed by a signer trusted by the policy of the pull request's base commit (on the
  default branch, never the PR's own ``policies/``) or by the server's own key;
- it is not expired, and the policy digest still matches.

Anything else is ``rejected`` with a comment naming the failed check (fail closed: no merged
pull request, no plans, a missing attestation, a GitHub error while looking). The callback URL
must point at this repository's ``.../actions/runs/<id>/deployment_protection_rule`` on the
configured GitHub API; any other URL is refused (a forged payload cannot make us POST
elsewhere).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlsplit

from app.approvals.attest import storage_path
from app.approvals.verify import verify_for_execution
from app.check import PLAN_SUFFIXES
from app.errors import AttestationError, GitHubError, PlangateError
from app.github.attestations import AttestationStore
from app.github.client import RepoClient
from app.plan.loader import load_plan_bytes
from app.policy.loader import load_policy_files
from app.signing.base import Trust, trust_from_policy

__all__ = ["DeploymentGate", "DeploymentVerdict"]

log = logging.getLogger(__name__)

_KINDS = ("dsse", "sigstore")
_MAX_COMMENT = 1000


@dataclass(frozen=True, slots=True)
class DeploymentVerdict:
    state: str  # approved | rejected
    comment: str


class DeploymentGate:
    """Decides and answers deployment protection rule requests (see the module doc).

    ``own_trust`` is the server's configuration (its own signing key); ``now`` is injected.
    """

    def __init__(
        self,
        *,
        api_url: str,
        now: Callable[[], datetime],
        own_trust: Trust | None = None,
        store_for: Callable[[RepoClient], AttestationStore] = AttestationStore,
    ) -> None:
        self.api = urlsplit(api_url.rstrip("/"))
        self.now = now
        self.own_trust = own_trust or Trust()
        self.store_for = store_for

    def handle(self, client: RepoClient, payload: Mapping[str, Any]) -> DeploymentVerdict:
        """Decide, then answer GitHub. Raises ``GitHubError`` when the answer cannot be sent."""
        callback = self.callback_path(client.full_name, str(payload.get("deployment_callback_url")))
        environment = str(payload.get("environment") or "")
        try:
            verdict = self.decide(client, payload)
        except GitHubError as exc:  # cannot look: reject now rather than leave it pending
            log.warning("deployment check on %s failed: %s", client.full_name, exc)
            verdict = DeploymentVerdict("rejected", f"Plangate could not verify: {exc}")
        body = {
            "environment_name": environment,
            "state": verdict.state,
            "comment": verdict.comment[:_MAX_COMMENT],
        }
        client.transport.request("POST", callback, body=body)
        return verdict

    def callback_path(self, repo: str, url: str) -> str:
        """The callback as a path on the configured API, or ``ValueError`` if it is elsewhere."""
        parts = urlsplit(url)
        owner, _, name = repo.partition("/")
        prefix = self.api.path.rstrip("/")
        pattern = (
            re.escape(f"{prefix}/repos/{quote(owner)}/{quote(name)}/actions/runs/")
            + r"\d+/deployment_protection_rule"
        )
        if (
            (parts.scheme, parts.netloc) != (self.api.scheme, self.api.netloc)
            or parts.query
            or not re.fullmatch(pattern, parts.path)
        ):
            raise ValueError(f"deployment_callback_url {url!r} is not this repository's run")
        return parts.path[len(prefix) :]

    def decide(self, client: RepoClient, payload: Mapping[str, Any]) -> DeploymentVerdict:
        sha = str((payload.get("deployment") or {}).get("sha") or payload.get("sha") or "")
        if not re.fullmatch(r"[0-9a-f]{40}", sha):
            return _reject("the deployment names no commit")
        pr = self._merged_pull(client, sha)
        if pr is None:
            return _reject(f"no merged pull request has {sha[:7]} as its merge commit")
        number, head, base = int(pr["number"]), pr["head"]["sha"], pr["base"]["sha"]
        plans = [
            f.path
            for f in client.changed_files(number)
            if f.path.startswith("plans/")
            and f.path.endswith(PLAN_SUFFIXES)
            and f.status != "removed"
        ]
        if not plans:
            return _reject(f"merged pull request #{number} changes no plans")
        try:
            policy = _policy_at(client, base)
            trust = _merge_trust(trust_from_policy(policy.signers), self.own_trust)
            store = self.store_for(client)
            tip = store.head()
            documents = {k: store.read(storage_path(number, head, k), at=tip) for k in _KINDS}
            found = [(k, d) for k, d in documents.items() if d is not None]
            if not found:
                return _reject(f"no approval attestation stored for #{number} at {head[:7]}")
            now = self.now()
            for path in plans:
                raw = client.file_at(path, sha)
                if raw is None:
                    return _reject(f"{path} is missing from {sha[:7]}")
                digest = load_plan_bytes(path, raw).digest
                kind, document = found[0]
                verify_for_execution(
                    path,
                    digest,
                    document,
                    trust,
                    client.full_name,
                    number,
                    now,
                    expected_head_sha=head,
                    expected_policy_digest=policy.digest,
                    source=storage_path(number, head, kind),
                )
        except GitHubError:
            raise
        except AttestationError as exc:
            return _reject(f"check '{exc.check}' failed: {exc.diagnostics()}")
        except PlangateError as exc:
            return _reject(exc.diagnostics())
        names = ", ".join(plans)
        return DeploymentVerdict(
            "approved", f"Plangate verified the approval attestation of #{number}: {names}"
        )

    def _merged_pull(self, client: RepoClient, sha: str) -> Mapping[str, Any] | None:
        owner, _, name = client.full_name.partition("/")
        pulls = client.transport.paginate(
            f"/repos/{quote(owner)}/{quote(name)}/commits/{sha}/pulls"
        )
        for pr in pulls:
            if pr.get("merged_at") and pr.get("merge_commit_sha") == sha:
                return pr
        return None


def _reject(reason: str) -> DeploymentVerdict:
    return DeploymentVerdict("rejected", f"Plangate: {reason}")


def _policy_at(client: RepoClient, commit: str) -> Any:
    # one GraphQL query for the folder with its texts (each checked against its blob SHA),
    # cached by tree SHA, as the evaluator reads them; REST tree + blobs only as a fallback
    _, files = client.files_under(commit, "policies")
    return load_policy_files(files, origin="policies/")


def _merge_trust(a: Trust, b: Trust) -> Trust:
    return Trust(
        keys=(*a.keys, *b.keys),
        identities=(*a.identities, *b.identities),
        sigstore_instance=a.sigstore_instance,
    )
