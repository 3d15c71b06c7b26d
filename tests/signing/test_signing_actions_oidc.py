"""Keyless signing prerequisites: the Actions OIDC token request (mocked with ``responses``)
and the guards that keep signing out of pull-request workflows."""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
import requests
import responses
from responses import matchers

from app.errors import AttestationError
from app.signing import github_workflow_identity
from app.signing.sigstore_backend import (
    SigstoreSigner,
    check_signing_context,
    check_token_claims,
    fetch_actions_id_token,
    unverified_claims,
)

REQUEST_URL = "https://pipelines.actions.githubusercontent.example/abc/idtoken?api-version=2.0"
IDENTITY = github_workflow_identity("acme/ops", "plangate-approve.yml", "main")


def actions_token(**overrides) -> str:
    """A token shaped like GitHub's (claims per GitHub's OIDC docs); signature irrelevant here:
    Fulcio verifies it, clients only forward it."""
    now = int(time.time())
    claims = {
        "iss": "https://token.actions.githubusercontent.com",
        "aud": "sigstore",
        "sub": "repo:acme/ops:ref:refs/heads/main",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "repository": "acme/ops",
        "repository_id": "1296269",
        "ref": "refs/heads/main",
        "event_name": "workflow_dispatch",
        "job_workflow_ref": "acme/ops/.github/workflows/plangate-approve.yml@refs/heads/main",
    }
    claims.update(overrides)
    return jwt.encode(claims, "not-a-real-key-0123456789abcdef0123", algorithm="HS256")


@responses.activate
def test_fetch_actions_id_token_sends_audience_and_bearer_token():
    token = actions_token()
    responses.get(
        REQUEST_URL.split("?")[0],
        json={"count": 1, "value": token},
        match=[
            matchers.query_param_matcher({"api-version": "2.0", "audience": "sigstore"}),
            matchers.header_matcher({"Authorization": "bearer request-token"}),
        ],
    )
    assert fetch_actions_id_token(request_url=REQUEST_URL, request_token="request-token") == token


@responses.activate
def test_token_request_without_permission_explains_id_token_write():
    responses.get(REQUEST_URL.split("?")[0], status=403, json={"message": "forbidden"})
    with pytest.raises(AttestationError, match="HTTP 403") as info:
        fetch_actions_id_token(request_url=REQUEST_URL, request_token="t")
    assert info.value.check == "sign"
    assert "id-token: write" in info.value.diagnostics()


@responses.activate
def test_token_response_without_value_is_rejected():
    responses.get(REQUEST_URL.split("?")[0], json={"count": 0})
    with pytest.raises(AttestationError, match="no 'value'"):
        fetch_actions_id_token(request_url=REQUEST_URL, request_token="t")


@responses.activate
def test_token_request_network_error_is_an_attestation_error():
    responses.get(REQUEST_URL.split("?")[0], body=requests.exceptions.ConnectionError("boom"))
    with pytest.raises(AttestationError, match="could not request"):
        fetch_actions_id_token(request_url=REQUEST_URL, request_token="t")


def test_sigstore_accepts_the_token_as_an_identity():
    from sigstore.oidc import IdentityToken

    identity = IdentityToken(actions_token())
    assert identity.issuer == "https://token.actions.githubusercontent.com"
    assert identity.identity == "repo:acme/ops:ref:refs/heads/main"
    assert identity.in_validity_period()


def test_signer_accepts_default_branch_dispatch_token():
    SigstoreSigner(identity_token=actions_token(), expected=IDENTITY)


def test_never_signs_in_pull_request_review_run():
    token = actions_token(
        event_name="pull_request_review",
        job_workflow_ref="acme/ops/.github/workflows/plangate-approve.yml@refs/pull/7/merge",
    )
    with pytest.raises(AttestationError, match="pull_request_review") as info:
        SigstoreSigner(identity_token=token, expected=IDENTITY)
    assert info.value.check == "sign"


def test_token_from_another_workflow_or_branch_is_refused():
    for ref in (
        "acme/ops/.github/workflows/other.yml@refs/heads/main",
        "acme/ops/.github/workflows/plangate-approve.yml@refs/heads/feature",
        "evil/ops/.github/workflows/plangate-approve.yml@refs/heads/main",
    ):
        with pytest.raises(AttestationError, match="verifiers trust only"):
            check_token_claims(unverified_claims(actions_token(job_workflow_ref=ref)), IDENTITY)


def test_token_from_another_issuer_is_refused():
    claims = unverified_claims(actions_token(iss="https://gitlab.com"))
    with pytest.raises(AttestationError, match="issuer"):
        check_token_claims(claims, IDENTITY)


def test_malformed_token_is_refused():
    with pytest.raises(AttestationError, match="malformed"):
        SigstoreSigner(identity_token="a.b.c", expected=IDENTITY)


@pytest.mark.parametrize("event", ["pull_request", "pull_request_target", "pull_request_review"])
def test_signing_context_refuses_pull_request_events(event: str):
    with pytest.raises(AttestationError, match="author controls"):
        check_signing_context(event_name=event, ref="refs/heads/main", default_branch="main")


def test_signing_context_requires_default_branch():
    check_signing_context(
        event_name="workflow_dispatch", ref="refs/heads/main", default_branch="main"
    )
    with pytest.raises(AttestationError, match="refs/heads/main"):
        check_signing_context(
            event_name="workflow_dispatch", ref="refs/heads/feature", default_branch="main"
        )


# --- against a real HTTP server on 127.0.0.1 (the token service's shape, no network) --------


class _TokenService:
    """GitHub's Actions ID token endpoint, served on 127.0.0.1 for one test."""

    def __init__(self, token: str, *, status: int = 200) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        service = self
        self.requests: list[tuple[str, str]] = []  # (path with query, Authorization)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                service.requests.append((self.path, self.headers.get("Authorization", "")))
                body = json.dumps({"count": 1, "value": token}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        host, port = self.server.server_address[:2]
        self.url = f"http://{host}:{port}/_apis/distributedtask/idtoken?api-version=2.0"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def token_service():
    service = _TokenService(actions_token())
    yield service
    service.close()


def test_token_request_against_local_token_service(token_service):
    token = fetch_actions_id_token(request_url=token_service.url, request_token="req-token")
    assert unverified_claims(token)["aud"] == "sigstore"
    ((path, auth),) = token_service.requests
    parsed = urlsplit(path)
    assert parse_qs(parsed.query) == {"api-version": ["2.0"], "audience": ["sigstore"]}
    assert auth == "bearer req-token"
    assert unverified_claims(token)["job_workflow_ref"].endswith("@refs/heads/main")


def test_our_token_request_matches_sigstore_detect_credential(token_service, monkeypatch):
    """``IdentityToken(detect_credential())`` (sigstore-python) and ours get the same token
    from the same environment: the request is the one sigstore makes."""
    from sigstore.oidc import IdentityToken, detect_credential

    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_URL", token_service.url)
    monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "req-token")
    theirs = detect_credential()
    ours = fetch_actions_id_token(request_url=token_service.url, request_token="req-token")
    assert theirs == ours
    assert IdentityToken(theirs).identity == "repo:acme/ops:ref:refs/heads/main"
    assert [auth for _, auth in token_service.requests] == ["bearer req-token"] * 2
    assert all("audience=sigstore" in path for path, _ in token_service.requests)
    SigstoreSigner(identity_token=ours, expected=IDENTITY)  # the claims pass our pre-check


def test_local_token_service_refusal_names_the_permission():
    service = _TokenService("unused", status=403)
    try:
        with pytest.raises(AttestationError, match="HTTP 403") as info:
            fetch_actions_id_token(request_url=service.url, request_token="t")
    finally:
        service.close()
    assert "id-token: write" in info.value.diagnostics()
