"""GitHub actions: ``github.workflow`` (dispatch, then wait), ``github.pull_request``,
``github.issue`` (open). Request bodies follow GitHub's OpenAPI description (tests validate them
against the schema from ``@octokit/openapi``).

Idempotency, so that a repeated attempt does not open a second pull request or issue:
- ``github.pull_request``: GitHub refuses a second open PR for the same head and base (422); we
  then look the existing one up and return it.
- ``github.issue``: the body ends with an invisible marker naming the plan digest and step; before
  opening, the 100 most recent issues are searched for it and an existing one is returned.
- ``github.workflow`` is not idempotent (a dispatch always starts a run); the registry says so and
  the runner never repeats an interrupted dispatch without a human.

Waiting for a workflow: GitHub.com answers the dispatch with the run id when asked
(``return_run_details``); GitHub Enterprise Server answers 204 without it, so before dispatching
we note the newest ``workflow_dispatch`` run and afterwards wait for a newer one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from app.actions.builtin import GitHubIssueInputs, GitHubPullRequestInputs, GitHubWorkflowInputs
from app.execute.actions._support import deadline, expect_inputs, secret
from app.execute.actions.base import ActionContext, ActionResult, Usage
from app.execute.actions.errors import ActionFailed
from app.execute.actions.github_client import (
    DEFAULT_TOKEN_SECRET,
    GitHubResponse,
    GitHubRest,
    HttpxGitHubRest,
)
from app.settings import DEFAULT_API_URL

__all__ = [
    "ClientFactory",
    "GitHubIssueAction",
    "GitHubPullRequestAction",
    "GitHubWorkflowAction",
    "default_client_factory",
    "issue_marker",
]

ClientFactory = Callable[[ActionContext], GitHubRest]
Sleep = Callable[[float], Awaitable[None]]

#: conclusions worth another attempt (the runner decides; these are infrastructure hiccups)
_RETRYABLE_CONCLUSIONS = {"timed_out", "startup_failure", "stale"}
_ISSUE_SCAN = 100


def default_client_factory(
    *,
    api_url: str = DEFAULT_API_URL,
    transport: httpx.AsyncBaseTransport | None = None,
    token_secret: str = DEFAULT_TOKEN_SECRET,
    now: Callable[[], float] = time.time,
) -> ClientFactory:
    """Clients for ``ctx.extra["github_api_url"]`` (else ``api_url``), authenticated with the
    secret named ``ctx.extra["github_token_secret"]`` (else ``token_secret``)."""

    def make(ctx: ActionContext) -> GitHubRest:
        base = str(ctx.extra.get("github_api_url") or api_url)
        name = str(ctx.extra.get("github_token_secret") or token_secret)
        token = secret(ctx, name, purpose="GitHub token")
        return HttpxGitHubRest(ctx=ctx, base_url=base, token=token, transport=transport, now=now)

    return make


class _Counting:
    """Counts API calls of one attempt for ``Usage.api_calls``."""

    def __init__(self, client: GitHubRest) -> None:
        self.client = client
        self.calls = 0

    async def __call__(self, method: str, path: str, **kwargs: Any) -> GitHubResponse:
        self.calls += 1
        return await self.client.request(method, path, **kwargs)


class _GitHubAction:
    name = ""

    def __init__(self, *, client_factory: ClientFactory | None = None) -> None:
        self._factory = client_factory or default_client_factory()

    def breaker_key(self, inputs: BaseModel) -> str:
        return f"github:{getattr(inputs, 'repo', '?')}"

    @staticmethod
    def _repo_path(repo: str) -> str:
        owner, name = repo.split("/", 1)
        return f"/repos/{quote(owner, safe='')}/{quote(name, safe='')}"


class GitHubWorkflowAction(_GitHubAction):
    """Outputs: ``run_id``, ``html_url``, ``status``, ``conclusion`` (the last three need
    ``wait``). A conclusion other than ``success`` fails the step with kind
    ``github.workflow.<conclusion>``."""

    name = "github.workflow"

    def __init__(
        self,
        *,
        client_factory: ClientFactory | None = None,
        sleep: Sleep = asyncio.sleep,
        return_run_details: bool = True,
    ) -> None:
        super().__init__(client_factory=client_factory)
        self._sleep = sleep
        self._run_details = return_run_details

    def dispatch_body(self, data: GitHubWorkflowInputs, ctx: ActionContext) -> dict[str, Any]:
        """The body of ``actions/create-workflow-dispatch``."""
        body: dict[str, Any] = {"ref": data.ref}
        if data.inputs:
            body["inputs"] = dict(data.inputs)
        if self._run_details:
            body["return_run_details"] = True
        return body

    async def run(self, inputs: BaseModel, ctx: ActionContext) -> ActionResult:
        data = expect_inputs(inputs, GitHubWorkflowInputs, ctx)
        workflow = quote(data.workflow, safe="")
        base = f"{self._repo_path(data.repo)}/actions/workflows/{workflow}"
        if ctx.dry_run:
            return ActionResult(log=f"dry run: would dispatch {data.repo} {data.workflow}")
        client = self._factory(ctx)
        call = _Counting(client)
        try:
            async with deadline(ctx, f"workflow {data.repo}/{data.workflow}"):
                return await self._run(call, base, data, ctx)
        finally:
            await client.aclose()

    async def _run(
        self, call: _Counting, base: str, data: GitHubWorkflowInputs, ctx: ActionContext
    ) -> ActionResult:
        before = await self._newest_dispatch_run(call, base) if data.wait else None
        response = await call("POST", f"{base}/dispatches", json=self.dispatch_body(data, ctx))
        run_id: int | None = None
        html_url: str | None = None
        if response.status == 200 and isinstance(response.data, dict):
            run_id = response.data.get("workflow_run_id")
            html_url = response.data.get("html_url")
        if not data.wait:
            return ActionResult(
                outputs={
                    "run_id": run_id,
                    "html_url": html_url,
                    "status": None,
                    "conclusion": None,
                },
                usage=Usage(api_calls=call.calls),
                log=f"dispatched {data.workflow} on {data.ref} in {data.repo}",
            )
        if run_id is None:
            run_id = await self._find_new_run(call, base, before or 0, data)
        run = await self._wait(call, run_id, data)
        outputs = {
            "run_id": run_id,
            "html_url": run.get("html_url", html_url),
            "status": run.get("status"),
            "conclusion": run.get("conclusion"),
        }
        usage = Usage(api_calls=call.calls, runner_minutes=_minutes(run))
        conclusion = str(run.get("conclusion"))
        if conclusion != "success":
            raise ActionFailed(
                f"step '{ctx.step_id}': workflow {data.workflow} in {data.repo} concluded "
                f"'{conclusion}': {outputs['html_url']}",
                step=ctx.step_id,
                kind=f"github.workflow.{conclusion}",
                retryable=conclusion in _RETRYABLE_CONCLUSIONS,
                outputs=outputs,
            )
        return ActionResult(
            outputs=outputs, usage=usage, log=f"{data.workflow}: success {outputs['html_url']}"
        )

    @staticmethod
    async def _dispatch_runs(call: _Counting, base: str) -> list[dict[str, Any]]:
        response = await call(
            "GET", f"{base}/runs", params={"event": "workflow_dispatch", "per_page": 20}
        )
        runs = (response.data or {}).get("workflow_runs") or []
        return [r for r in runs if isinstance(r, dict) and isinstance(r.get("id"), int)]

    async def _newest_dispatch_run(self, call: _Counting, base: str) -> int:
        return max((r["id"] for r in await self._dispatch_runs(call, base)), default=0)

    async def _find_new_run(
        self, call: _Counting, base: str, before: int, data: GitHubWorkflowInputs
    ) -> int:
        """GitHub creates the run asynchronously; poll until a newer dispatch run on our ref
        shows up. The oldest such run is ours unless someone dispatched the same workflow on the
        same ref in the same seconds (GHES only: GitHub.com returns the run id)."""
        ref = data.ref.removeprefix("refs/heads/").removeprefix("refs/tags/")
        while True:
            ours = [
                r["id"]
                for r in await self._dispatch_runs(call, base)
                if r["id"] > before and r.get("head_branch") in (None, ref)
            ]
            if ours:
                return min(ours)
            await self._sleep(data.poll_interval)

    async def _wait(
        self, call: _Counting, run_id: int, data: GitHubWorkflowInputs
    ) -> dict[str, Any]:
        path = f"{self._repo_path(data.repo)}/actions/runs/{int(run_id)}"
        while True:
            run = (await call("GET", path)).data or {}
            if run.get("status") == "completed":
                return run
            await self._sleep(data.poll_interval)


def _minutes(run: dict[str, Any]) -> float:
    """Wall-clock minutes of the run (started -> last update), an estimate of runner time."""
    try:
        start = datetime.fromisoformat(str(run["run_started_at"]).replace("Z", "+00:00"))
        end = datetime.fromisoformat(str(run["updated_at"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return 0.0
    return max(0.0, round((end - start).total_seconds() / 60, 3))


class GitHubPullRequestAction(_GitHubAction):
    """Outputs: ``number``, ``html_url``, ``url``, ``existing`` (true when it was already open)."""

    name = "github.pull_request"

    @staticmethod
    def request_body(data: GitHubPullRequestInputs) -> dict[str, Any]:
        """The body of ``pulls/create``."""
        return {
            "title": data.title,
            "head": data.head,
            "base": data.base,
            "body": data.body,
            "draft": data.draft,
        }

    async def run(self, inputs: BaseModel, ctx: ActionContext) -> ActionResult:
        data = expect_inputs(inputs, GitHubPullRequestInputs, ctx)
        if ctx.dry_run:
            return ActionResult(log=f"dry run: would open a pull request in {data.repo}")
        path = f"{self._repo_path(data.repo)}/pulls"
        client = self._factory(ctx)
        call = _Counting(client)
        try:
            async with deadline(ctx, f"opening a pull request in {data.repo}"):
                response = await call("POST", path, json=self.request_body(data), accept=(422,))
                existing = False
                pull = response.data if isinstance(response.data, dict) else {}
                if response.status == 422:
                    pull = await self._existing(call, path, data, response, ctx)
                    existing = True
        finally:
            await client.aclose()
        return ActionResult(
            outputs={
                "number": pull.get("number"),
                "html_url": pull.get("html_url"),
                "url": pull.get("url"),
                "existing": existing,
            },
            usage=Usage(api_calls=call.calls),
            log=f"pull request #{pull.get('number')}: {pull.get('html_url')}",
        )

    @staticmethod
    async def _existing(
        call: _Counting,
        path: str,
        data: GitHubPullRequestInputs,
        refused: GitHubResponse,
        ctx: ActionContext,
    ) -> dict[str, Any]:
        """After a 422: the open PR for this head/base, or the 422 as a non-retryable failure."""
        head = data.head if ":" in data.head else f"{data.repo.split('/')[0]}:{data.head}"
        found = await call("GET", path, params={"head": head, "base": data.base, "state": "open"})
        if isinstance(found.data, list) and found.data:
            return found.data[0]
        message = refused.data.get("message") if isinstance(refused.data, dict) else None
        errors = refused.data.get("errors") if isinstance(refused.data, dict) else None
        raise ActionFailed(
            f"step '{ctx.step_id}': GitHub refused the pull request {data.head} -> {data.base} "
            f"in {data.repo} (HTTP 422): {message} {errors or ''}".rstrip(),
            step=ctx.step_id,
            kind="github.4xx",
            retryable=False,
            hint="check that the head branch exists and differs from the base",
        )


def issue_marker(ctx: ActionContext) -> str:
    """Invisible in rendered Markdown; stable across attempts of the same step of the same plan."""
    return f"<!-- plangate-step: {ctx.plan_digest} {ctx.step_id} -->"


class GitHubIssueAction(_GitHubAction):
    """Outputs: ``number``, ``html_url``, ``url``, ``existing``."""

    name = "github.issue"

    @staticmethod
    def request_body(data: GitHubIssueInputs, ctx: ActionContext) -> dict[str, Any]:
        """The body of ``issues/create``, ending with the idempotency marker."""
        text = f"{data.body}\n\n{issue_marker(ctx)}" if data.body else issue_marker(ctx)
        body: dict[str, Any] = {"title": data.title, "body": text}
        if data.labels:
            body["labels"] = list(data.labels)
        return body

    async def run(self, inputs: BaseModel, ctx: ActionContext) -> ActionResult:
        data = expect_inputs(inputs, GitHubIssueInputs, ctx)
        if ctx.dry_run:
            return ActionResult(log=f"dry run: would open an issue in {data.repo}")
        path = f"{self._repo_path(data.repo)}/issues"
        client = self._factory(ctx)
        call = _Counting(client)
        try:
            async with deadline(ctx, f"opening an issue in {data.repo}"):
                issue = await self._find(call, path, ctx)
                existing = issue is not None
                if issue is None:
                    response = await call("POST", path, json=self.request_body(data, ctx))
                    issue = response.data if isinstance(response.data, dict) else {}
        finally:
            await client.aclose()
        return ActionResult(
            outputs={
                "number": issue.get("number"),
                "html_url": issue.get("html_url"),
                "url": issue.get("url"),
                "existing": existing,
            },
            usage=Usage(api_calls=call.calls),
            log=f"issue #{issue.get('number')}: {issue.get('html_url')}",
        )

    @staticmethod
    async def _find(call: _Counting, path: str, ctx: ActionContext) -> dict[str, Any] | None:
        marker = issue_marker(ctx)
        response = await call(
            "GET",
            path,
            params={
                "state": "all",
                "sort": "created",
                "direction": "desc",
                "per_page": _ISSUE_SCAN,
            },
        )
        for issue in response.data if isinstance(response.data, list) else []:
            if isinstance(issue, dict) and marker in str(issue.get("body") or ""):
                return issue
        return None
