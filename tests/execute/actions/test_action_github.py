"""GitHub actions against a fake GitHub answering with the documented example responses.

Every request body we send is validated against the request-body schema of its operation in
``tests/fixtures/github/openapi-subset.json`` (from ``@octokit/openapi``; see its PROVENANCE).
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from action_helpers import DIGEST, make_ctx, run

from app.actions.builtin import GitHubIssueInputs, GitHubPullRequestInputs, GitHubWorkflowInputs
from app.errors import StepFailed
from app.execute.actions.errors import ActionFailed
from app.execute.actions.github import (
    GitHubIssueAction,
    GitHubPullRequestAction,
    GitHubWorkflowAction,
    default_client_factory,
    issue_marker,
)

SUBSET = json.loads((Path(__file__).parents[2] / "fixtures/github/openapi-subset.json").read_text())
OPS = SUBSET["operations"]
SECRETS = {"GITHUB_TOKEN": "ghs_installation_token_1234"}
API = "https://api.github.com"


def example(op_id: str, status: str = "200") -> Any:
    return copy.deepcopy(OPS[op_id]["examples"][status])


def _template(path: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(path)) + "$")


ROUTES = [(op["method"], _template(op["path"]), op_id) for op_id, op in OPS.items()]


class FakeGitHub:
    """Routes each request to its OpenAPI operation; ``answers[op_id]`` makes the response.

    Records (operation id, request) and validates every JSON body against the operation's
    request schema (github.com's, or GHES 3.19's when ``schemas="ghes-3.19"``).
    """

    def __init__(self, prefix: str = "", schemas: str = "operations") -> None:
        self.prefix = prefix
        self.schemas = SUBSET[schemas]
        self.answers: dict[str, Callable[[httpx.Request], httpx.Response]] = {}
        self.calls: list[tuple[str, httpx.Request]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        assert path.startswith(self.prefix), path
        path = path[len(self.prefix) :]
        op_id = next(
            (
                op
                for method, pattern, op in ROUTES
                if method == request.method and pattern.match(path)
            ),
            None,
        )
        assert op_id is not None, f"unexpected {request.method} {path}"
        if request.content:
            schema = self.schemas[op_id]["request_schema"]
            jsonschema.Draft7Validator(schema).validate(json.loads(request.content))
        self.calls.append((op_id, request))
        return self.answers[op_id](request)

    def ops(self) -> list[str]:
        return [op for op, _ in self.calls]

    def bodies(self, op_id: str) -> list[Any]:
        return [json.loads(r.content) for op, r in self.calls if op == op_id]

    def factory(self, api_url: str = API):
        return default_client_factory(api_url=api_url, transport=httpx.MockTransport(self))


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def ctx(**kwargs):
    kwargs.setdefault("secrets", SECRETS)
    return make_ctx(**kwargs)


def run_states(*states: tuple[str, str | None]) -> Callable[[httpx.Request], httpx.Response]:
    """``actions/get-workflow-run`` answers: the documented example with status/conclusion set."""
    remaining = list(states)

    def answer(request: httpx.Request) -> httpx.Response:
        status, conclusion = remaining.pop(0) if len(remaining) > 1 else remaining[0]
        body = example("actions/get-workflow-run")
        body.update(status=status, conclusion=conclusion, updated_at="2020-01-22T19:45:08Z")
        return httpx.Response(200, json=body)

    return answer


def workflow_inputs(**kwargs) -> GitHubWorkflowInputs:
    values = {"repo": "octo-org/octo-repo", "workflow": "deploy.yml", "ref": "v2.41.0",
              "inputs": {"environment": "production"}, "poll_interval": 15}  # fmt: skip
    values.update(kwargs)
    return GitHubWorkflowInputs(**values)


# ---- github.workflow -------------------------------------------------------------------------


def test_dispatch_with_run_details_then_wait_for_success():
    gh = FakeGitHub()
    before = example("actions/list-workflow-runs")
    gh.answers["actions/list-workflow-runs"] = lambda r: httpx.Response(200, json=before)
    dispatched = example("actions/create-workflow-dispatch")
    dispatched["workflow_run_id"] = 30433642
    gh.answers["actions/create-workflow-dispatch"] = lambda r: httpx.Response(200, json=dispatched)
    gh.answers["actions/get-workflow-run"] = run_states(
        ("queued", None), ("in_progress", None), ("completed", "success")
    )
    sleeps = Sleeps()
    action = GitHubWorkflowAction(client_factory=gh.factory(), sleep=sleeps)
    result = run(action.run(workflow_inputs(), ctx()))
    assert gh.bodies("actions/create-workflow-dispatch") == [
        {"ref": "v2.41.0", "inputs": {"environment": "production"}, "return_run_details": True}
    ]
    dispatch = next(r for op, r in gh.calls if op == "actions/create-workflow-dispatch")
    assert dispatch.url.path == "/repos/octo-org/octo-repo/actions/workflows/deploy.yml/dispatches"
    assert dispatch.headers["Authorization"] == "Bearer ghs_installation_token_1234"
    assert dispatch.headers["X-GitHub-Api-Version"] == "2022-11-28"
    assert dispatch.headers["Accept"] == "application/vnd.github+json"
    assert result.outputs["run_id"] == 30433642
    assert result.outputs["conclusion"] == "success"
    assert (
        result.outputs["html_url"] == "https://github.com/octo-org/octo-repo/actions/runs/30433642"
    )
    assert sleeps.calls == [15, 15]
    assert result.usage.runner_minutes == 12.0  # 19:33:08 -> 19:45:08
    assert result.usage.api_calls == len(gh.calls) == 5


def test_ghes_without_run_details_finds_the_new_run():
    """GHES 3.19 answers 204; the run is the first dispatch run newer than the one seen before."""
    gh = FakeGitHub(prefix="/api/v3", schemas="ghes-3.19")
    old = example("actions/list-workflow-runs")
    other = copy.deepcopy(old)  # someone else's dispatch on another branch: not ours
    other["workflow_runs"].insert(0, {**old["workflow_runs"][0], "id": 30433650})
    new = copy.deepcopy(other)
    new["workflow_runs"].insert(0, {**old["workflow_runs"][0], "id": 30433651})
    new["workflow_runs"][0]["head_branch"] = "v2.41.0"
    lists = [old, other, new]  # before the dispatch; not ours yet; ours
    gh.answers["actions/list-workflow-runs"] = lambda r: httpx.Response(200, json=lists.pop(0))
    gh.answers["actions/create-workflow-dispatch"] = lambda r: httpx.Response(204)
    gh.answers["actions/get-workflow-run"] = run_states(("completed", "success"))
    action = GitHubWorkflowAction(
        client_factory=gh.factory("https://ghe.example/api/v3"),
        sleep=Sleeps(),
        return_run_details=False,
    )
    result = run(action.run(workflow_inputs(), ctx()))
    assert gh.bodies("actions/create-workflow-dispatch") == [
        {"ref": "v2.41.0", "inputs": {"environment": "production"}}
    ]
    listing = gh.calls[0][1]
    assert listing.url.params["event"] == "workflow_dispatch"
    assert result.outputs["run_id"] == 30433651
    run_get = next(r for op, r in gh.calls if op == "actions/get-workflow-run")
    assert run_get.url.path == "/api/v3/repos/octo-org/octo-repo/actions/runs/30433651"


def test_base_url_from_the_context_wins():
    gh = FakeGitHub(prefix="/api/v3")
    gh.answers["actions/create-workflow-dispatch"] = lambda r: httpx.Response(204)
    action = GitHubWorkflowAction(client_factory=gh.factory(), sleep=Sleeps())
    extra = {"github_api_url": "https://ghe.example/api/v3"}
    result = run(action.run(workflow_inputs(wait=False), ctx(extra=extra)))
    assert gh.calls[0][1].url.host == "ghe.example"
    assert result.outputs["run_id"] is None and gh.ops() == ["actions/create-workflow-dispatch"]


@pytest.mark.parametrize(
    ("conclusion", "retryable"),
    [("failure", False), ("cancelled", False), ("timed_out", True), ("startup_failure", True)],
)
def test_unsuccessful_conclusion_fails_the_step(conclusion, retryable):
    gh = FakeGitHub()
    dispatched = example("actions/create-workflow-dispatch")
    gh.answers["actions/list-workflow-runs"] = lambda r: httpx.Response(
        200, json=example("actions/list-workflow-runs")
    )
    gh.answers["actions/create-workflow-dispatch"] = lambda r: httpx.Response(200, json=dispatched)
    gh.answers["actions/get-workflow-run"] = run_states(("completed", conclusion))
    action = GitHubWorkflowAction(client_factory=gh.factory(), sleep=Sleeps())
    with pytest.raises(ActionFailed, match=f"concluded '{conclusion}'") as info:
        run(action.run(workflow_inputs(), ctx(step_id="deploy")))
    assert info.value.kind == f"github.workflow.{conclusion}"
    assert info.value.retryable is retryable
    assert info.value.outputs["conclusion"] == conclusion


@pytest.mark.parametrize(
    ("status", "headers", "kind", "retryable", "retry_after"),
    [
        (404, {}, "github.4xx", False, None),
        (422, {}, "github.4xx", False, None),
        (502, {}, "github.5xx", True, None),
        (403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1700000090"},
         "github.rate_limited", True, 90.0),
        (429, {"retry-after": "30"}, "github.rate_limited", True, 30.0),
        (403, {}, "github.4xx", False, None),
    ],
)  # fmt: skip
def test_github_errors_are_classified(status, headers, kind, retryable, retry_after):
    gh = FakeGitHub()
    gh.answers["actions/create-workflow-dispatch"] = lambda r: httpx.Response(
        status,
        json={"message": "nope", "documentation_url": "https://docs.github.com"},
        headers=headers,
    )
    factory = default_client_factory(transport=httpx.MockTransport(gh), now=lambda: 1_700_000_000.0)
    action = GitHubWorkflowAction(client_factory=factory, sleep=Sleeps())
    with pytest.raises(ActionFailed) as info:
        run(action.run(workflow_inputs(wait=False), ctx()))
    assert (info.value.kind, info.value.retryable) == (kind, retryable)
    assert info.value.retry_after == retry_after


def test_secondary_rate_limit_without_headers_waits_a_minute():
    gh = FakeGitHub()
    message = {"message": "You have exceeded a secondary rate limit. Please wait a few minutes."}
    gh.answers["actions/create-workflow-dispatch"] = lambda r: httpx.Response(403, json=message)
    action = GitHubWorkflowAction(client_factory=gh.factory(), sleep=Sleeps())
    with pytest.raises(ActionFailed) as info:
        run(action.run(workflow_inputs(wait=False), ctx()))
    assert info.value.kind == "github.rate_limited" and info.value.retry_after == 60.0


def test_missing_token_sends_nothing():
    gh = FakeGitHub()
    action = GitHubWorkflowAction(client_factory=gh.factory(), sleep=Sleeps())
    with pytest.raises(StepFailed, match="secret 'GITHUB_TOKEN'") as info:
        run(action.run(workflow_inputs(), ctx(secrets={})))
    assert info.value.kind == "secret.missing" and gh.calls == []


def test_token_never_appears_in_error_messages():
    gh = FakeGitHub()
    gh.answers["actions/create-workflow-dispatch"] = lambda r: httpx.Response(
        401, text=f"bad credentials {r.headers['Authorization']}"
    )
    action = GitHubWorkflowAction(client_factory=gh.factory(), sleep=Sleeps())
    with pytest.raises(StepFailed) as info:
        run(action.run(workflow_inputs(wait=False), ctx()))
    assert "ghs_installation_token_1234" not in str(info.value)


def test_a_workflow_that_never_finishes_hits_the_step_timeout():
    gh = FakeGitHub()
    gh.answers["actions/list-workflow-runs"] = lambda r: httpx.Response(
        200, json=example("actions/list-workflow-runs")
    )
    gh.answers["actions/create-workflow-dispatch"] = lambda r: httpx.Response(
        200, json=example("actions/create-workflow-dispatch")
    )
    gh.answers["actions/get-workflow-run"] = run_states(("in_progress", None))
    action = GitHubWorkflowAction(client_factory=gh.factory(), sleep=asyncio.sleep)
    with pytest.raises(StepFailed) as info:
        run(action.run(workflow_inputs(poll_interval=1), ctx(timeout=0.05)))
    assert info.value.kind == "timeout"


# ---- github.pull_request ---------------------------------------------------------------------


def pr_inputs(**kwargs) -> GitHubPullRequestInputs:
    values = {"repo": "octocat/Hello-World", "title": "Amazing new feature",
              "body": "Please pull these awesome changes in!", "head": "new-topic",
              "base": "master"}  # fmt: skip
    values.update(kwargs)
    return GitHubPullRequestInputs(**values)


def test_open_pull_request():
    gh = FakeGitHub()
    gh.answers["pulls/create"] = lambda r: httpx.Response(201, json=example("pulls/create", "201"))
    result = run(GitHubPullRequestAction(client_factory=gh.factory()).run(pr_inputs(), ctx()))
    assert gh.bodies("pulls/create") == [
        {"title": "Amazing new feature", "head": "new-topic", "base": "master",
         "body": "Please pull these awesome changes in!", "draft": False}
    ]  # fmt: skip
    assert result.outputs == {
        "number": 1347,
        "html_url": "https://github.com/octocat/Hello-World/pull/1347",
        "url": "https://api.github.com/repos/octocat/Hello-World/pulls/1347",
        "existing": False,
    }


def test_pull_request_already_open_is_returned_not_duplicated():
    gh = FakeGitHub()
    refused = {
        "message": "Validation Failed",
        "errors": [{"resource": "PullRequest", "code": "custom",
                    "message": "A pull request already exists for octocat:new-topic."}],
    }  # fmt: skip
    gh.answers["pulls/create"] = lambda r: httpx.Response(422, json=refused)
    gh.answers["pulls/list"] = lambda r: httpx.Response(200, json=example("pulls/list"))
    result = run(GitHubPullRequestAction(client_factory=gh.factory()).run(pr_inputs(), ctx()))
    listing = gh.calls[1][1]
    assert listing.url.params["head"] == "octocat:new-topic"
    assert listing.url.params["base"] == "master"
    assert result.outputs["existing"] is True and result.outputs["number"] == 1347


def test_pull_request_refused_for_another_reason_is_not_retryable():
    gh = FakeGitHub()
    refused = {"message": "Validation Failed", "errors": [{"field": "head", "code": "invalid"}]}
    gh.answers["pulls/create"] = lambda r: httpx.Response(422, json=refused)
    gh.answers["pulls/list"] = lambda r: httpx.Response(200, json=[])
    with pytest.raises(StepFailed, match="refused the pull request new-topic -> master") as info:
        run(GitHubPullRequestAction(client_factory=gh.factory()).run(pr_inputs(), ctx()))
    assert info.value.kind == "github.4xx" and not info.value.retryable


# ---- github.issue ----------------------------------------------------------------------------


def issue_inputs(**kwargs) -> GitHubIssueInputs:
    values = {"repo": "octocat/Hello-World", "title": "Found a bug",
              "body": "I'm having a problem with this.", "labels": ["bug"]}  # fmt: skip
    values.update(kwargs)
    return GitHubIssueInputs(**values)


def test_open_issue_with_the_idempotency_marker():
    gh = FakeGitHub()
    gh.answers["issues/list-for-repo"] = lambda r: httpx.Response(
        200, json=example("issues/list-for-repo")
    )
    gh.answers["issues/create"] = lambda r: httpx.Response(
        201, json=example("issues/create", "201")
    )
    c = ctx(step_id="announce")
    result = run(GitHubIssueAction(client_factory=gh.factory()).run(issue_inputs(), c))
    assert gh.ops() == ["issues/list-for-repo", "issues/create"]
    [body] = gh.bodies("issues/create")
    assert body["title"] == "Found a bug" and body["labels"] == ["bug"]
    assert body["body"].startswith("I'm having a problem with this.")
    assert body["body"].endswith(f"<!-- plangate-step: {DIGEST} announce -->")
    assert result.outputs["number"] == 1347 and result.outputs["existing"] is False
    assert result.usage.api_calls == 2


def test_issue_already_opened_by_an_earlier_attempt_is_not_opened_again():
    gh = FakeGitHub()
    c = ctx(step_id="announce", attempt=2)
    listed = example("issues/list-for-repo")
    listed[0]["body"] = "Earlier attempt\n\n" + issue_marker(c)
    gh.answers["issues/list-for-repo"] = lambda r: httpx.Response(200, json=listed)
    result = run(GitHubIssueAction(client_factory=gh.factory()).run(issue_inputs(), c))
    assert gh.ops() == ["issues/list-for-repo"]
    assert result.outputs["existing"] is True and result.outputs["number"] == 1347


def test_issue_without_labels_or_body_still_matches_the_schema():
    gh = FakeGitHub()
    gh.answers["issues/list-for-repo"] = lambda r: httpx.Response(200, json=[])
    gh.answers["issues/create"] = lambda r: httpx.Response(
        201, json=example("issues/create", "201")
    )
    run(GitHubIssueAction(client_factory=gh.factory()).run(issue_inputs(body="", labels=[]), ctx()))
    [body] = gh.bodies("issues/create")
    assert set(body) == {"title", "body"}


def test_sent_bodies_are_checked_against_the_schema():
    """The validator is real: a body GitHub would reject fails it."""
    schema = OPS["actions/create-workflow-dispatch"]["request_schema"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate({"inputs": {}})  # no ref
    pulls = OPS["pulls/create"]["request_schema"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(pulls).validate({"title": "x", "base": "main", "draft": "yes"})


def test_provenance_names_the_package_and_version():
    assert "@octokit/openapi@23.0.2" in SUBSET["PROVENANCE"]


def test_dry_run_calls_nothing():
    gh = FakeGitHub()
    for action, data in (
        (GitHubWorkflowAction(client_factory=gh.factory()), workflow_inputs()),
        (GitHubPullRequestAction(client_factory=gh.factory()), pr_inputs()),
        (GitHubIssueAction(client_factory=gh.factory()), issue_inputs()),
    ):
        assert "dry run" in run(action.run(data, ctx(dry_run=True))).log
    assert gh.calls == []


def test_breaker_key_is_the_repository():
    assert GitHubIssueAction().breaker_key(issue_inputs()) == "github:octocat/Hello-World"
