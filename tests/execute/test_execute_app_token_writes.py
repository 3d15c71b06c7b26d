"""``plangate execute`` writes the App-only attestation branch with the App's own token.

The fake GitHub of ``test_execute_github`` plus the App endpoints (installation lookup, access
token, revocation) and the branch protection docs/github-app.md asks for: a write that moves
``refs/heads/plangate-attestations`` is refused unless it carries the App's token, with the
422 GitHub answers for a ruleset ("Repository rule violations found"). Every request body is
checked against ``@octokit/openapi``, the token request included.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from cryptography.hazmat.primitives import serialization

from app.audit.git_store import GitAuditStore
from app.execute.github_access import attestation_branch_scope
from tests.execute import test_execute_github as base
from tests.execute import test_execute_scoped_token as scoped
from tests.execute.test_execute_github import BRANCH, OPENAPI, PR, REPO, TOKEN, execute

world = base.world
app_key = scoped.app_key

APP_TOKEN = "ghs_attestationBRANCHtoken42"  # what GitHub mints for contents: write
OTHER_APP_TOKEN = "ghs_someOTHERappTOKEN0007"
INSTALLATION = 42
JSON = {"Content-Type": "application/json"}
PROTECTED = {
    "message": "Repository rule violations found\n\nCannot update this protected ref.\n\n",
    "documentation_url": "https://docs.github.com/rest/git/refs#update-a-reference",
    "status": "422",
}


class AppAndProtection:
    """Wraps the fake: App routes, the branch ruleset, and who sent what with which token."""

    def __init__(self, gh: Any, *, protect: bool = True, lifetime: float = 3600) -> None:
        self.gh = gh
        self.protect = protect
        self.lifetime = lifetime  # of the tokens GitHub mints (an hour)
        self.calls: list[tuple[str, str, Any, str]] = []  # method, path, body, Authorization
        self.token_bodies: list[Any] = []
        self.revoked: list[str] = []
        self.refused: list[str] = []
        gh._callback = self._callback

    def _callback(self, request: Any) -> tuple[int, dict[str, str], str]:
        parts = urlsplit(request.url)
        path = unquote(parts.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        body = json.loads(request.body) if request.body else None
        auth = request.headers.get("Authorization", "")
        self.calls.append((request.method, path, body, auth))
        if path == f"/repos/{REPO}/installation":
            assert auth.startswith("Bearer ")  # the App's JWT
            doc = OPENAPI["apps/get-repo-installation"]["examples"]["200"]
            return 200, JSON, json.dumps({**doc, "id": INSTALLATION})
        if path == f"/app/installations/{INSTALLATION}/access_tokens":
            assert auth.startswith("Bearer ")
            self.gh._validate("apps/create-installation-access-token", body)
            self.token_bodies.append(body)
            token = APP_TOKEN if body["permissions"] == {"contents": "write"} else OTHER_APP_TOKEN
            expires = datetime.now(UTC) + timedelta(seconds=self.lifetime)
            doc = scoped._token_response(
                body, token=token, expires_at=expires.strftime("%Y-%m-%dT%H:%M:%SZ")
            )
            return 201, JSON, json.dumps(doc)
        if path == "/installation/token" and request.method == "DELETE":
            self.revoked.append(auth)
            return 204, {}, ""
        assert auth in (f"token {TOKEN}", f"token {APP_TOKEN}"), auth
        if (
            self.protect
            and moves_branch(request.method, path, body)
            and auth != f"token {APP_TOKEN}"
        ):
            self.refused.append(f"{request.method} {path}")
            return 422, JSON, json.dumps(PROTECTED)
        status, payload = self.gh._route(request.method, path, query, body)
        return status, JSON, json.dumps(payload)

    def by_token(self, token: str) -> list[tuple[str, str]]:
        return [(m, p) for m, p, _b, a in self.calls if a == f"token {token}"]


def moves_branch(method: str, path: str, body: Any) -> bool:
    """A write that creates or moves the attestation branch (what a ruleset protects)."""
    if method == "PATCH" and path == f"/repos/{REPO}/git/refs/heads/{BRANCH}":
        return True
    return (
        method == "POST"
        and path == f"/repos/{REPO}/git/refs"
        and body["ref"] == (f"refs/heads/{BRANCH}")
    )


def moves_lock(method: str, path: str, body: Any) -> bool:
    if method == "PATCH" and path.startswith(f"/repos/{REPO}/git/refs/plangate/locks/"):
        return True
    return (
        method == "POST"
        and path == f"/repos/{REPO}/git/refs"
        and str(body["ref"]).startswith("refs/plangate/locks/")
    )


def _signing_key(world, tmp_path: Path) -> Path:
    path = tmp_path / "executor.pem"
    path.write_bytes(
        world.signer._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def _run(world, tmp_path, monkeypatch, *, app_key: str | None, protect=True, lifetime=3600.0):
    world.build()
    world.attest()
    if app_key is not None:
        monkeypatch.setenv("GITHUB_APP_ID", "1")
        monkeypatch.setenv("GITHUB_PRIVATE_KEY", app_key)
    else:
        monkeypatch.delenv("GITHUB_APP_ID", raising=False)
        monkeypatch.delenv("GITHUB_PRIVATE_KEY", raising=False)
    hub = AppAndProtection(world.gh, protect=protect, lifetime=lifetime)
    code = execute(world, "--signing-key", str(_signing_key(world, tmp_path)))
    return code, hub


def test_attestation_branch_scope_is_this_repository_and_contents_write():
    scope = attestation_branch_scope("acme/ops")
    body = scope.body()
    assert body == {"repositories": ["ops"], "permissions": {"contents": "write"}}
    assert scoped._schema_errors(body) == []  # @octokit/openapi: create-installation-access-token


def test_attestation_branch_writes_carry_the_app_token_and_nothing_else_needs_it(
    world, tmp_path, monkeypatch, app_key
):
    code, hub = _run(world, tmp_path, monkeypatch, app_key=app_key)
    assert code == 0, world.gh.summary()
    assert world.gh.conclusion() == "success"
    # one token, for exactly this repository and contents: write (body checked against OpenAPI)
    assert hub.token_bodies == [{"repositories": ["ops"], "permissions": {"contents": "write"}}]
    assert hub.refused == []
    # what landed on the protected branch: the run attestation and the carried state
    stored = world.gh.git.files(BRANCH)
    assert [p for p in stored if ".run-" in p] and "state/state.sqlite.gz" in stored
    # every write that moved the branch carried the App's token ...
    branch_moves = [(m, p, a) for m, p, b, a in hub.calls if moves_branch(m, p, b)]
    assert len(branch_moves) >= 3  # run attestation, state, its statement
    assert {a for _m, _p, a in branch_moves} == {f"token {APP_TOKEN}"}
    app_writes = [
        (m, p) for m, p in hub.by_token(APP_TOKEN) if m != "GET" and p != "/installation/token"
    ]
    assert app_writes and all(p.startswith(f"/repos/{REPO}/git/") for _m, p in app_writes)
    assert not [
        (m, b) for m, p, b, _a in hub.calls if moves_lock(m, p, b) and _a != f"token {TOKEN}"
    ]
    # ... while the check run, the comment and the lock refs used the job's token
    job = hub.by_token(TOKEN)
    assert ("POST", f"/repos/{REPO}/check-runs") in job
    assert ("POST", f"/repos/{REPO}/issues/{PR}/comments") in job
    assert [c for c in hub.calls if moves_lock(c[0], c[1], c[2])]  # the plan's lock was taken
    assert hub.revoked == [f"token {APP_TOKEN}"]  # revoked when execute ends


def test_app_token_never_appears_in_output_events_or_anything_sent(
    world, tmp_path, monkeypatch, app_key, capsys
):
    code, hub = _run(world, tmp_path, monkeypatch, app_key=app_key)
    assert code == 0
    captured = capsys.readouterr()
    data = world.root.parent / "data"
    store = GitAuditStore(world.root)
    try:
        audit = [json.dumps(e.payload, default=str) for e in store.events()]
    finally:
        store.close()
    assert audit  # the audit trail was written
    sent = [json.dumps(b) for _m, _p, b, _a in hub.calls if b is not None]
    messages = [c["message"] for c in world.gh.git.commits.values()]
    blobs = [b.decode(errors="replace") for b in world.gh.git.blobs.values()]
    haystacks = {
        "stdout": captured.out,
        "stderr": captured.err,
        "events.jsonl": (data / "events.jsonl").read_text(),
        "audit events": "\n".join(audit),
        "request bodies (check run, comment, git data)": "\n".join(sent),
        "commit messages": "\n".join(messages),
        "stored blobs": "\n".join(blobs),
    }
    assert "attestation-branch token scoped to acme/ops (contents: write)" in captured.err
    for where, text in haystacks.items():
        assert APP_TOKEN not in text, where
        assert "attestationBRANCH" not in text, where
        assert TOKEN not in text, where


def test_without_app_credentials_on_a_protected_branch_the_run_is_not_a_plain_success(
    world, tmp_path, monkeypatch, capsys
):
    code, hub = _run(world, tmp_path, monkeypatch, app_key=None)
    # the plan ran and succeeded: the exit code says so (a re-run would not fix credentials)
    assert code == 0 and world.marker().read_text() == "hello"
    assert hub.token_bodies == [] and hub.refused  # the job's token tried and was refused
    assert not [p for p in world.gh.git.files(BRANCH) if ".run-" in p]
    final = world.gh.final()
    assert final["conclusion"] == "neutral"  # not "success"
    assert final["output"]["title"].endswith("; NOT recorded on the attestation branch")
    summary = world.gh.summary()
    assert "**No App credentials** (GITHUB_APP_ID and GITHUB_PRIVATE_KEY" in summary
    assert "secrets PLANGATE_APP_ID and PLANGATE_APP_PRIVATE_KEY" in summary
    assert "cannot store its run attestation" in summary
    assert "warning: the run was NOT attested" in summary
    assert "accepts pushes only from the Plangate App, set GITHUB_APP_ID" in summary
    assert "Run state NOT carried to the next workflow run" in summary
    err = capsys.readouterr().err
    assert "plangate: no App credentials (GITHUB_APP_ID and GITHUB_PRIVATE_KEY" in err
    assert "plangate: warning: the run was NOT attested" in err


def test_without_app_credentials_an_unprotected_branch_still_works(
    world, tmp_path, monkeypatch, capsys
):
    code, hub = _run(world, tmp_path, monkeypatch, app_key=None, protect=False)
    assert code == 0 and world.gh.conclusion() == "success"
    assert hub.token_bodies == []  # no App, no App token
    assert [p for p in world.gh.git.files(BRANCH) if ".run-" in p]  # stored with the job token
    assert "**No App credentials**" in world.gh.summary()  # said, though nothing failed
    assert "warning:" not in capsys.readouterr().err


def test_in_actions_a_failed_record_is_a_workflow_warning(world, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    code, _hub = _run(world, tmp_path, monkeypatch, app_key=None)
    assert code == 0
    err = capsys.readouterr().err
    assert "::warning title=plangate execute::the run was NOT attested" in err


def test_a_token_near_its_expiry_is_replaced_and_the_old_one_revoked(
    world, tmp_path, monkeypatch, app_key
):
    # GitHub's tokens live an hour and a run may last longer: one that has less than 5 minutes
    # left is not used for the next write
    code, hub = _run(world, tmp_path, monkeypatch, app_key=app_key, lifetime=120)
    assert code == 0 and world.gh.conclusion() == "success"
    # minted at start-up (broken credentials fail before anything runs), then replaced for the
    # run attestation and again for the carried state + statement
    mints = 3
    assert len(hub.token_bodies) == mints
    assert hub.revoked == [f"token {APP_TOKEN}"] * mints  # each replaced one, then the last
