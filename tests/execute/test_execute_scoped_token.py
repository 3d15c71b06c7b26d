"""Least privilege in Actions: each run's GitHub token is minted for that run, scoped to the
repositories and permissions its plan declares, and revoked at the end.

Pure scope rules (``app.execute.github_access``), the token call (``InstallationTokens.
scoped_token``: body checked against ``@octokit/openapi``), and ``plangate execute`` end to end
against the fake GitHub of ``test_execute_github``.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import jsonschema
import pytest
import responses
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from app.errors import GitHubError, InputError
from app.execute.github_access import token_scope
from app.github.auth import AppCredentials, InstallationTokens
from app.github.client import HttpRetry
from app.plan.loader import load_plan_bytes
from tests.execute import test_execute_github as base
from tests.execute.test_execute_github import OPENAPI, PLAN, execute

world = base.world

HEADER = """apiVersion: plangate.dev/v1
kind: Plan
id: gh-plan
title: uses GitHub
team: platform
environment: local
"""
WORKFLOW_STEP = """  - id: deploy
    action: github.workflow
    with: {repo: acme/payments-api, workflow: deploy.yml}
    compensate:
      none: a deploy is rolled forward by the next one
"""
ISSUE_STEP = """  - id: announce
    action: github.issue
    with: {repo: acme/releases, title: done}
    compensate:
      none: the record stays
"""


def _plan(text: str):
    return load_plan_bytes("plans/gh.yaml", text.encode())


def _scope(text: str):
    loaded = _plan(text)
    return token_scope(loaded.plan, path=loaded.path, line_of=lambda i: loaded.line_of("steps", i))


# --- the scope rules -----------------------------------------------------------------------------


def test_declared_scope_is_the_token_scope():
    scope = _scope(
        HEADER
        + "github:\n  repositories: [acme/payments-api, acme/releases]\n"
        + "  permissions: {actions: write, issues: write}\nsteps:\n"
        + WORKFLOW_STEP
        + ISSUE_STEP
    )
    assert scope.body() == {
        "repositories": ["payments-api", "releases"],
        "permissions": {"actions": "write", "issues": "write"},
    }
    assert scope.owner == "acme" and scope.declared


def test_undeclared_scope_is_what_the_github_steps_need():
    scope = _scope(HEADER + "steps:\n" + WORKFLOW_STEP + ISSUE_STEP)
    assert scope.body() == {
        "repositories": ["payments-api", "releases"],
        "permissions": {"actions": "write", "issues": "write"},
    }
    assert not scope.declared
    assert _scope(HEADER + "steps:\n  - {id: a, action: noop}\n") is None  # no GitHub, no token


def test_action_cannot_use_a_permission_the_plan_did_not_declare():
    text = (
        HEADER
        + "github:\n  repositories: [acme/payments-api]\n  permissions: {issues: write}\n"
        + "steps:\n"
        + WORKFLOW_STEP
    )
    with pytest.raises(InputError) as info:
        _scope(text)
    assert (
        "plans/gh.yaml:11: step 'deploy': github.workflow needs permission actions: write, "
        "which `github.permissions` does not declare"
    ) in info.value.message


def test_read_is_not_write():
    text = (
        HEADER
        + "github:\n  repositories: [acme/releases]\n  permissions: {issues: read}\nsteps:\n"
        + ISSUE_STEP
    )
    with pytest.raises(InputError, match=r"issues: write, .* \(it has read\)"):
        _scope(text)


def test_action_cannot_reach_a_repository_the_plan_did_not_declare():
    text = (
        HEADER
        + "github:\n  repositories: [acme/releases]\n  permissions: {actions: write}\nsteps:\n"
        + WORKFLOW_STEP
    )
    with pytest.raises(InputError, match=r"github\.workflow on acme/payments-api, which"):
        _scope(text)


def test_declared_repositories_of_several_owners_are_invalid():
    from app.errors import PlanError

    with pytest.raises(PlanError, match="several owners"):
        _plan(
            HEADER
            + "github:\n  repositories: [acme/a, other/b]\n  permissions: {issues: write}\n"
            + "steps:\n  - {id: a, action: noop}\n"
        )


def test_a_plan_without_github_keeps_its_digest():
    # the optional field is omitted from the canonical form when unset: approvals signed before
    # the field existed still match
    loaded = _plan(HEADER + "steps:\n  - {id: a, action: noop}\n")
    assert "github" not in loaded.plan.model_dump(mode="json", by_alias=True)


# --- the token call ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _token_response(body: dict[str, Any], **override: Any) -> dict[str, Any]:
    doc = copy.deepcopy(OPENAPI["apps/create-installation-access-token"]["examples"]["201"])
    repo = doc["repositories"][0]
    doc.update(
        token="ghs_scopedRUNtoken0001",
        expires_at="2026-11-25T08:00:00Z",
        permissions={**body["permissions"], "metadata": "read"},
        repository_selection="selected",
        repositories=[{**repo, "name": n, "full_name": f"acme/{n}"} for n in body["repositories"]],
    )
    doc.update(override)
    return doc


TOKEN_URL = re.compile(r"https://api\.github\.com(:443)?/app/installations/42/access_tokens")


def _schema_errors(body: Any) -> list[str]:
    schema = OPENAPI["apps/create-installation-access-token"]["request_schema"]
    return [e.message for e in jsonschema.Draft4Validator(schema).iter_errors(body)]


def _tokens(app_key: str) -> InstallationTokens:
    return InstallationTokens(
        AppCredentials(app_id=1, private_key=app_key, base_url="https://api.github.com"),
        retry=HttpRetry(max_attempts=1),
        sleep=lambda s: None,
    )


@responses.activate
def test_scoped_token_request_body_matches_openapi(app_key):
    seen: list[Any] = []

    def answer(request):
        body = json.loads(request.body)
        seen.append(body)
        assert request.headers["Authorization"].startswith("Bearer ")  # the App's JWT
        return 201, {}, json.dumps(_token_response(body))

    responses.add_callback("POST", TOKEN_URL, callback=answer)
    scoped = _tokens(app_key).scoped_token(
        42, repositories=["releases"], permissions={"issues": "write"}
    )
    assert seen == [{"repositories": ["releases"], "permissions": {"issues": "write"}}]
    assert _schema_errors(seen[0]) == []
    assert scoped.token == "ghs_scopedRUNtoken0001" and scoped.permissions == {"issues": "write"}
    assert "ghs_" not in repr(scoped)


@pytest.mark.parametrize(
    "override",
    [
        {"permissions": {"issues": "write", "contents": "write"}},  # more than asked
        {"permissions": {"issues": "read"}},  # less than asked
        {"repository_selection": "all"},  # every repository of the installation
    ],
)
@responses.activate
def test_a_token_wider_or_narrower_than_asked_is_refused(app_key, override):
    def answer(request):
        return 201, {}, json.dumps(_token_response(json.loads(request.body), **override))

    responses.add_callback("POST", TOKEN_URL, callback=answer)
    with pytest.raises(GitHubError, match="refusing to use it"):
        _tokens(app_key).scoped_token(
            42, repositories=["releases"], permissions={"issues": "write"}
        )


# --- plangate execute ----------------------------------------------------------------------------

SEES_TOKEN = """apiVersion: plangate.dev/v1
kind: Plan
id: local-hello
title: a step that names GITHUB_TOKEN gets the run's token, never the job's
team: platform
environment: local
github:
  repositories: [acme/ops]
  permissions: {issues: write}
steps:
  - id: look
    action: shell
    mutates: false
    with:
      run: [python3, -c, "import os, pathlib; pathlib.Path('.plangate/seen').write_text(
        os.environ['SEEN'])"]
      secret_env: {SEEN: GITHUB_TOKEN}
    timeout: 10s
"""


class AppRoutes:
    """The App endpoints on the execute fake: installation lookup, token, revocation."""

    def __init__(self, gh: Any) -> None:
        self.gh = gh
        self.token_bodies: list[Any] = []
        self.revoked: list[str] = []
        original = gh._callback

        def callback(request: Any) -> tuple[int, dict[str, str], str]:
            path = request.url.split("api.github.com", 1)[1].split("?")[0].removeprefix(":443")
            auth = request.headers.get("Authorization", "")
            if path == "/repos/acme/ops/installation":
                assert auth.startswith("Bearer ")
                doc = OPENAPI["apps/get-repo-installation"]["examples"]["200"]
                return 200, {"Content-Type": "application/json"}, json.dumps({**doc, "id": 42})
            if path == "/app/installations/42/access_tokens":
                assert auth.startswith("Bearer ")
                body = json.loads(request.body)
                gh._validate("apps/create-installation-access-token", body)
                self.token_bodies.append(body)
                return 201, {"Content-Type": "application/json"}, json.dumps(_token_response(body))
            if path == "/installation/token" and request.method == "DELETE":
                self.revoked.append(auth)
                return 204, {}, ""
            return original(request)

        gh._callback = callback


def _run_with_app(world, monkeypatch, app_key, plan_text):
    world.build(plan_text=plan_text)
    world.attest()
    monkeypatch.setenv("GITHUB_APP_ID", "1")
    monkeypatch.setenv("GITHUB_PRIVATE_KEY", app_key)
    routes = AppRoutes(world.gh)
    return execute(world), routes


def test_run_gets_its_own_token_scoped_to_the_plan_and_revoked(world, monkeypatch, app_key):
    code, routes = _run_with_app(world, monkeypatch, app_key, SEES_TOKEN)
    assert code == 0, world.gh.summary()
    assert routes.token_bodies == [{"repositories": ["ops"], "permissions": {"issues": "write"}}]
    seen = (world.root / ".plangate" / "seen").read_text()
    assert seen == "ghs_scopedRUNtoken0001"  # the run's token, not the job's GITHUB_TOKEN
    assert routes.revoked == ["token ghs_scopedRUNtoken0001"]  # gone when the run ends


def test_plan_exceeding_its_declared_github_access_never_runs(world, monkeypatch, app_key):
    text = SEES_TOKEN.replace(
        "steps:\n",
        "steps:\n  - id: dispatch\n    action: github.workflow\n"
        "    with: {repo: acme/ops, workflow: deploy.yml}\n"
        "    compensate: {none: rolled forward by the next deploy}\n",
        1,
    )
    code, routes = _run_with_app(world, monkeypatch, app_key, text)
    assert code == 2
    assert routes.token_bodies == []  # no token was even minted
    assert not (world.root / ".plangate" / "seen").exists()
    summary = world.gh.summary()
    assert f"{PLAN}:11: step 'dispatch': github.workflow needs permission actions: write" in (
        summary
    )


def test_job_token_is_never_a_step_secret(world, monkeypatch):
    """Without App credentials a step naming GITHUB_TOKEN gets nothing (not the job's token)."""
    world.build(plan_text=SEES_TOKEN)
    world.attest()
    assert execute(world) == 3  # the step fails: its secret is not available
    assert not (world.root / ".plangate" / "seen").exists()
    assert "no App credentials" in world.gh.summary()
