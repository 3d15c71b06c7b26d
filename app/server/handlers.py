"""Thin per-``(event, action)`` handlers: pick the pull request(s) out of the payload, then hand
over to ``PullRequestPipeline``.

Handlers get their dependencies when the router is built (``build_router``), so a test passes an
``Event`` and fakes, with no HTTP. Which events matter (issue 5):

- ``pull_request``: opened, synchronize, reopened, ready_for_review, edited (base changed only);
  closed only forgets the pull request's pending plans (dashboard)
- ``pull_request_review``: submitted, edited, dismissed (only ``plangate/approval`` changes)
- ``check_suite``: requested (unless checks exist for that head already), rerequested
- ``check_run``: rerequested, requested_action (on ``plangate/execute``: the Retry / Cancel
  buttons, a queue request judged by policy, see ``app.server.queue_actions``)
- ``installation``/``installation_repositories``: recorded
- ``push`` to the default branch touching ``policies/``: re-evaluate open pull requests
- ``push`` to ``plangate-attestations`` adding ``pr-<N>/<head>.sigstore.json`` (the keyless
  approval workflow stored its bundle): re-evaluate that pull request's approval check
- ``deployment_protection_rule``: requested (approve or reject the environment, see
  ``app.server.deployment``)
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from app.github.attestations import ATTESTATION_BRANCH
from app.github.client import PullRequestInfo, RepoClient, pull_info
from app.server.deployment import DeploymentGate
from app.server.evaluate import POLICIES_DIR, PullRequestPipeline
from app.server.inbox import InboxStore
from app.server.queue_actions import EXECUTE_CHECK, QueueActions
from app.server.webhooks import Event, MalformedDelivery, Router
from app.signing.base import Signer

__all__ = ["PR_ACTIONS", "RepoClients", "build_router"]

log = logging.getLogger(__name__)

#: ``(installation id, "owner/name") -> RepoClient``
RepoClients = Callable[[int, str], RepoClient]

PR_ACTIONS = ("opened", "synchronize", "reopened", "ready_for_review", "edited")
REVIEW_ACTIONS = ("submitted", "edited", "dismissed")
INSTALLATION_ACTIONS = (
    "created",
    "deleted",
    "suspend",
    "unsuspend",
    "new_permissions_accepted",
)


def _pull(event: Event) -> PullRequestInfo:
    """The event's pull request, or ``MalformedDelivery`` (dead-lettered, nothing sent)."""
    try:
        return pull_info(event.payload["pull_request"])
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedDelivery(f"{event.name}: {exc}") from exc


def build_router(
    *,
    pipeline: PullRequestPipeline,
    inbox: InboxStore,
    clients: RepoClients,
    clock: Callable[[], float],
    deployments: DeploymentGate | None = None,
    signer: Signer | None = None,
) -> Router:
    router = Router()

    def client_for(event: Event) -> RepoClient:
        if event.installation_id is None or event.repo_full_name is None:
            raise ValueError("event has no installation or repository")  # filtered at ingest
        return clients(event.installation_id, event.repo_full_name)

    @router.register("pull_request", *PR_ACTIONS)
    def on_pull_request(event: Event) -> None:
        if event.action == "edited" and "base" not in (event.payload.get("changes") or {}):
            return  # a title/body edit changes nothing we check
        pr = _pull(event)
        if pr.state != "open":
            return
        pipeline.run(
            client_for(event),
            pr,
            with_reviews=event.action != "opened",
            delivery_id=event.delivery_id,
        )

    @router.register("pull_request", "closed")
    def on_closed(event: Event) -> None:
        # merged or closed: no longer pending (the dashboard's list); nothing is sent to GitHub
        if pipeline.evaluations is not None:
            pipeline.evaluations.forget(event.repo_full_name or "", _pull(event).number)

    @router.register("pull_request_review", *REVIEW_ACTIONS)
    def on_review(event: Event) -> None:
        pr = _pull(event)
        if pr.state != "open":
            return
        pipeline.run(client_for(event), pr, scope="approval", delivery_id=event.delivery_id)

    @router.register("check_suite", "requested", "rerequested")
    def on_check_suite(event: Event) -> None:
        suite = event.payload["check_suite"]
        _rerun(event, suite.get("pull_requests") or [], suite["head_sha"])

    queue = QueueActions(now=lambda: datetime.fromtimestamp(clock(), UTC), signer=signer)

    @router.register("check_run", "rerequested", "requested_action")
    def on_check_run(event: Event) -> None:
        run = event.payload["check_run"]
        if event.action == "requested_action" and run.get("name") == EXECUTE_CHECK:
            # Retry / Cancel on the executor's check run: a queue request (app/server/queue_actions)
            queue.handle(client_for(event), event)
            return
        prs = run.get("pull_requests") or (run.get("check_suite") or {}).get("pull_requests")
        _rerun(event, prs or [], run["head_sha"], force=True)

    def _rerun(
        event: Event, prs: list[Mapping[str, Any]], head_sha: str, *, force: bool = False
    ) -> None:
        rerun = force or event.action == "rerequested"
        repo = event.repo_full_name or ""
        if not rerun and inbox.has_check_runs(repo, head_sha):
            return  # the pull_request event for this head already produced the checks
        client = None
        for ref in prs:
            client = client or client_for(event)
            pr = client.pull(int(ref["number"]))
            if pr.head_sha != head_sha or pr.state != "open":
                continue  # superseded by a newer push
            pipeline.run(client, pr, delivery_id=event.delivery_id)

    @router.register("installation", *INSTALLATION_ACTIONS)
    def on_installation(event: Event) -> None:
        inst = event.payload["installation"]
        status = {"deleted": "deleted", "suspend": "suspended"}.get(event.action or "", "active")
        account = (inst.get("account") or {}).get("login")
        inbox.record_installation(int(inst["id"]), account=account, status=status, now=clock())

    @router.register("installation_repositories", "added", "removed")
    def on_installation_repositories(event: Event) -> None:
        inst = event.payload["installation"]
        account = (inst.get("account") or {}).get("login")
        inbox.record_installation(int(inst["id"]), account=account, status="active", now=clock())

    @router.register("push")
    def on_push(event: Event) -> None:
        payload = event.payload
        if payload.get("ref") == f"refs/heads/{ATTESTATION_BRANCH}":
            # the keyless approval workflow stored a bundle: re-judge that PR's approval check
            # (the attester verifies the stored bundle itself; the push only says where to look)
            for number, head in _keyless_attestations(payload):
                client = client_for(event)
                pr = client.pull(number)
                if pr.head_sha == head and pr.state == "open":
                    pipeline.run(client, pr, scope="approval", delivery_id=event.delivery_id)
            return
        default = (payload.get("repository") or {}).get("default_branch")
        if not default or payload.get("ref") != f"refs/heads/{default}":
            return
        if not _touches(payload, f"{POLICIES_DIR}/"):
            return
        client = client_for(event)
        for pr in client.open_pulls(default):
            _reevaluate(client, pr, event.delivery_id)

    if deployments is not None:

        @router.register("deployment_protection_rule", "requested")
        def on_deployment_protection_rule(event: Event) -> None:
            # approve the environment only when the merged PR's attestation verifies
            deployments.handle(client_for(event), event.payload)

    def _reevaluate(client: RepoClient, pr: PullRequestInfo, delivery_id: str) -> None:
        try:
            pipeline.run(client, pr, delivery_id=delivery_id)
        except Exception:
            log.exception("re-evaluating %s#%s after a policy change", client.full_name, pr.number)
            raise

    return router


_KEYLESS_PATH = re.compile(r"pr-([1-9][0-9]{0,9})/([0-9a-f]{40})\.sigstore\.json")


def _keyless_attestations(push: Mapping[str, Any]) -> list[tuple[int, str]]:
    """``(PR number, head SHA)`` of approval bundles a push to the attestation branch added."""
    found: set[tuple[int, str]] = set()
    for commit in push.get("commits") or []:
        for key in ("added", "modified"):
            for path in commit.get(key) or []:
                m = _KEYLESS_PATH.fullmatch(str(path))
                if m:
                    found.add((int(m.group(1)), m.group(2)))
    return sorted(found)


def _touches(push: Mapping[str, Any], prefix: str) -> bool:
    """Did any commit of a push add, change or remove a file under ``prefix``?

    GitHub lists at most 20 commits per push payload; with more (or none listed) we assume yes.
    """
    commits = push.get("commits") or []
    if not commits or len(commits) >= 20:
        return True
    for commit in commits:
        for key in ("added", "modified", "removed"):
            if any(str(p).startswith(prefix) for p in commit.get(key) or []):
                return True
    return False
