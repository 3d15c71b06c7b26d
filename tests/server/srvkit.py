"""Helpers for the webhook server tests: a fake GitHub behind ``responses``, signed posts."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import responses
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "github"))

from ghfake import FakeGitHub, webhook_fixture

from app.github.client import HttpRetry
from app.server.app import Deps, create_app
from app.server.webhooks import sign
from app.server.worker import WorkerPolicy
from app.settings import Settings

SECRET = "It's a Secret to Everybody"
REPO = "Codertocat/Hello-World"
HEAD = "ec26c3e57ca3a959ca5aad62de7213c562f8c821"
BASE = "f95f852bd8fca8fcc58a9a2d6c842781e32a215e"
ROOT = Path(__file__).resolve().parent.parent.parent
PLAN = (ROOT / "plans" / "local-hello.yaml").read_bytes()
POLICY = b"# policies read from the base branch\nteams: {}\n"


@pytest.fixture(scope="session")
def private_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture
def settings(tmp_path: Path, private_key: str) -> Settings:
    return Settings(
        github_app_id=42,
        github_private_key=private_key,
        github_webhook_secret=SECRET,
        github_api_url="https://ghes.example.com/api/v3",
        data_dir=tmp_path / "data",
    )


@pytest.fixture
def fake() -> Iterator[FakeGitHub]:
    gh = FakeGitHub("https://ghes.example.com/api/v3")
    repo = gh.repo(REPO)
    repo.default_branch = "master"
    repo.commit({"README.md": "hi\n", "policies/teams.yaml": POLICY}, branch="master", sha=BASE)
    repo.commit(
        {"README.md": "hi\n", "policies/teams.yaml": POLICY, "plans/hello.yaml": PLAN},
        branch="changes",
        sha=HEAD,
    )
    from ghfake import Pull

    repo.pulls[2] = Pull(2, HEAD, BASE, "master")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        gh.install(rsps)
        yield gh
    # every request body the app sent in any server test matches GitHub's OpenAPI schema
    assert gh.schema_errors == []


def make_deps(settings: Settings, **kw: Any) -> Deps:
    return Deps.from_settings(
        settings,
        http_retry=kw.pop("http_retry", HttpRetry(max_attempts=3, initial_delay=0, max_delay=0)),
        worker_policy=kw.pop("worker_policy", WorkerPolicy(initial_delay=0, max_delay=0)),
        sleep=lambda _s: None,
        start_worker=False,
        **kw,
    )


def post(client: Any, event: str, payload: dict[str, Any] | bytes, **kw: Any) -> Any:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": kw.pop("delivery", str(uuid.uuid4())),
        "X-Hub-Signature-256": kw.pop("signature", sign(SECRET.encode(), body)),
        "Content-Type": "application/json",
    }
    headers.update(kw.pop("headers", {}))
    return client.post("/webhook", content=body, headers=headers)


__all__ = [
    "BASE",
    "HEAD",
    "PLAN",
    "REPO",
    "SECRET",
    "create_app",
    "make_deps",
    "post",
    "webhook_fixture",
]
