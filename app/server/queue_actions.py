"""The Retry / Cancel buttons of ``plangate/execute``: ``check_run.requested_action``.

GitHub delivers the press only to the App that created the check run (``plangate execute
--queue-buttons auto`` creates it with the App's token). The request is judged like
``plangate retry|cancel`` (``app.execute.queue.decide``):

* **actor**: ``sender.login`` (who pressed);
* **policy**: ``policies/`` at the tip of the **default branch** (never a pull request head),
  read with the same client path as the deployment gate;
* **plans**: the check run's ``external_id`` (``pgx1;<path>=<digest prefix>``, written by the
  executor) names them; each is loaded from the check run's commit (the merge commit) and its
  digest must match the prefix.

Every request, allowed or denied, is recorded on the bot-only attestation branch as
``queue/requests/<id>.json`` (the id derives from ``X-GitHub-Delivery``, so a redelivery maps
to the same record), signed with the App's key when it has one (a DSSE envelope the executor
verifies against the policy's ``signers``: a workflow that can write the branch cannot forge
it). Denied: the check run says who asked, the denying rule and reason, and nothing else
happens. Allowed:

* **retry**: ``workflow_dispatch`` of ``plangate-execute.yml`` on the default branch with input
  ``queue_request``; the executor runs only with this record (``--queue-request``). A
  ``.dispatched`` marker beside the record keeps a retried delivery from dispatching twice.
* **cancel**: ``queue/cancel/<digest>.json`` per plan (the executor checks it before each step,
  then compensates what ran) and the workflow run named by the check run's ``details_url`` is
  cancelled through the Actions API (409: it already ended). When the check run is completed
  (a paused or failed run, no workflow going), the workflow is dispatched with the cancel's id
  instead, so an executor marks the run cancelled and compensates what it changed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

from app.errors import GitHubError, PlangateError
from app.execute.queue import (
    REQUEST_PAYLOAD_TYPE,
    QueueDecision,
    QueuePlan,
    QueueRequest,
    Verb,
    cancel_path,
    check_actions,
    decide,
    parse_external_id,
    request_id_for,
    request_path,
)
from app.github.attestations import ATTESTATION_BRANCH, AttestationStore
from app.github.checks import truncate
from app.github.client import RepoClient
from app.plan.loader import load_plan_bytes
from app.policy.loader import load_policy_files
from app.server.webhooks import Event
from app.signing.base import Signer

__all__ = ["EXECUTE_CHECK", "EXECUTE_WORKFLOW", "QueueActions"]

log = logging.getLogger(__name__)

EXECUTE_CHECK = "plangate/execute"
EXECUTE_WORKFLOW = "plangate-execute.yml"
_RUN_ID = re.compile(r"/actions/runs/([0-9]+)")


class QueueActions:
    """Handles a button press on ``plangate/execute``. ``now`` gives the wall clock."""

    def __init__(
        self,
        *,
        now: Callable[[], datetime],
        workflow: str = EXECUTE_WORKFLOW,
        branch: str = ATTESTATION_BRANCH,
        signer: Signer | None = None,
    ) -> None:
        self.now = now
        self.workflow = workflow
        self.branch = branch
        #: the App's signing key (``PLANGATE_SIGNING_KEY_PATH``): records are then DSSE
        #: envelopes the executor verifies against the policy's ``signers``
        self.signer = signer

    def _document(self, request: QueueRequest) -> bytes:
        if self.signer is None:
            return request.to_json()
        return self.signer.sign(REQUEST_PAYLOAD_TYPE, request.to_json())

    def handle(self, client: RepoClient, event: Event) -> None:
        payload = event.payload
        run = payload["check_run"]
        identifier = str((payload.get("requested_action") or {}).get("identifier") or "")
        if identifier not in ("retry", "cancel"):
            log.warning("plangate/execute: unknown requested action %r ignored", identifier)
            return
        verb: Verb = identifier  # type: ignore[assignment]
        actor = str((payload.get("sender") or {}).get("login") or "")
        commit = str(run["head_sha"])
        default = str((payload.get("repository") or {}).get("default_branch") or "")
        default = default or client.default_branch()
        request_id = request_id_for(verb, event.delivery_id)
        path = request_path(request_id)
        store = AttestationStore(client, branch=self.branch)

        plans, decisions, problem = self._judge(client, run, verb, actor, commit, default)
        allowed = problem is None and bool(decisions) and all(d.allowed for d in decisions)
        request = QueueRequest(
            id=request_id,
            verb=verb,
            actor=actor,
            repository=client.full_name,
            commit=commit,
            plans=tuple(plans),
            verdict="allow" if allowed else "deny",
            rules=tuple(d.rule or "queue" for d in decisions) or ("queue.request",),
            reasons=tuple(d.reason or "" for d in decisions) or (problem or "",),
            policy_digest=decisions[0].policy_digest if decisions else "",
            requested_at=self.now(),
            check_run_id=int(run["id"]),
            delivery_id=event.delivery_id,
        )
        # the App's record of every request, allowed or denied (idempotent for a redelivery)
        store.store(
            path,
            self._document(request),
            message=f"plangate: {verb} requested by {actor} ({request.verdict})",
        )
        if not allowed:
            denials = [x for d in decisions for x in d.denials] or [problem or "not allowed"]
            self._say(
                client,
                run,
                f"**{verb.capitalize()} requested by @{actor}: denied.**\n\n"
                + "\n".join(f"- denied by {x}" for x in denials)
                + "\n\nNothing was changed.",
                verb=verb,
            )
            return
        if verb == "retry":
            note = self._dispatch(client, store, path, request_id, default)
        else:
            note = self._cancel(client, store, request, run)
            if run.get("status") == "completed":
                # no workflow is running the plan (a paused or failed run): an executor run
                # applies the cancel and compensates what the run changed (the saga)
                note += " " + self._dispatch(client, store, path, request_id, default)
        rules = ", ".join(sorted({d.rule or "queue" for d in decisions}))
        self._say(
            client,
            run,
            f"**{verb.capitalize()} requested by @{actor}: allowed** ({rules}). {note}",
            verb=verb,
        )

    # -- the decision ----------------------------------------------------------------------

    def _judge(
        self,
        client: RepoClient,
        run: Mapping[str, Any],
        verb: Verb,
        actor: str,
        commit: str,
        default: str,
    ) -> tuple[list[QueuePlan], list[QueueDecision], str | None]:
        named = parse_external_id(run.get("external_id"))
        if not named:
            return [], [], "queue.request: the check run names no plan (no plangate external_id)"
        try:
            # the default branch's policy, never a pull request's (fail closed: an error denies)
            _, files = client.files_under(client.ref_sha(default), "policies")
            policy = load_policy_files(files, origin=f"{default}:policies/")
        except GitHubError:
            raise  # transient: the worker retries the delivery
        except PlangateError as exc:
            return [], [], f"queue.policy: the default branch's policy does not load: {exc}"
        plans: list[QueuePlan] = []
        decisions: list[QueueDecision] = []
        for plan_path, prefix in named:
            raw = client.file_at(plan_path, commit)
            if raw is None:
                return plans, decisions, f"queue.plan: {plan_path} is not in {commit[:12]}"
            try:
                loaded = load_plan_bytes(plan_path, raw)
            except PlangateError as exc:
                return plans, decisions, f"queue.plan: {plan_path} does not load: {exc}"
            if not loaded.digest.removeprefix("sha256:").startswith(prefix):
                return (
                    plans,
                    decisions,
                    f"queue.plan: {plan_path} at {commit[:12]} is not the plan that ran",
                )
            plans.append(QueuePlan(plan_path, loaded.digest))
            decisions.append(decide(actor, verb, loaded.plan, loaded.digest, policy))
        return plans, decisions, None

    # -- the effects -----------------------------------------------------------------------

    def _dispatch(
        self, client: RepoClient, store: AttestationStore, path: str, request_id: str, ref: str
    ) -> str:
        if store.read(path + ".dispatched") is not None:
            return "The execute workflow was already dispatched for this request."
        owner, _, name = client.full_name.partition("/")
        client.transport.request(
            "POST",
            f"/repos/{quote(owner)}/{quote(name)}/actions/workflows/"
            f"{quote(self.workflow)}/dispatches",
            body={"ref": ref, "inputs": {"queue_request": request_id}},
        )
        store.store(
            path + ".dispatched",
            b"{}\n",
            message=f"plangate: {request_id} dispatched {self.workflow}",
        )
        return f"`{self.workflow}` dispatched on `{ref}` (queue request `{request_id}`)."

    def _cancel(
        self,
        client: RepoClient,
        store: AttestationStore,
        request: QueueRequest,
        run: Mapping[str, Any],
    ) -> str:
        for plan in request.plans:
            store.store(
                cancel_path(plan.digest),
                self._document(request),
                message=f"plangate: cancel of {plan.path} requested by {request.actor}",
            )
        note = "The run stops before its next step and undoes what it changed."
        m = _RUN_ID.search(str(run.get("details_url") or ""))
        if m is None or run.get("status") == "completed":
            return "The run is cancelled and what it changed is undone."
        owner, _, name = client.full_name.partition("/")
        try:
            client.transport.request(
                "POST",
                f"/repos/{quote(owner)}/{quote(name)}/actions/runs/{m.group(1)}/cancel",
            )
        except GitHubError as exc:
            if exc.status != 409:  # 409: the workflow run already ended
                raise
        return note + f" Workflow run {m.group(1)} cancelled."

    def _say(self, client: RepoClient, run: Mapping[str, Any], note: str, *, verb: str) -> None:
        """Put the request's outcome at the top of the check run's summary (what the executor
        wrote stays below); the buttons stay as they were."""
        output = run.get("output") or {}
        summary = f"{note}\n\n---\n\n{output.get('summary') or ''}"
        body: dict[str, Any] = {
            "output": {
                "title": str(output.get("title") or f"{verb} requested")[:255],
                "summary": truncate(summary),
            }
        }
        if run.get("status") == "completed":
            body["actions"] = check_actions([_status_of(run)])
        client.update_check_run(int(run["id"]), body)


def _status_of(run: Mapping[str, Any]) -> str:
    """Which buttons a completed run keeps: a failed or action-required run keeps Retry."""
    return {"failure": "failed", "action_required": "paused"}.get(
        str(run.get("conclusion") or ""), "succeeded"
    )
