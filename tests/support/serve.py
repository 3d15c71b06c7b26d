"""Start a real ``plangate serve`` process on 127.0.0.1 and talk to it over real HTTP.

One copy of the start-up used by the end-to-end tests (``tests/server/test_server_e2e.py`` and
the tests that import its helpers), the load test (``benchmarks/load.py``) and the end-to-end
benchmark (``benchmarks/e2e.py``): the real CLI (``app.cli.main``) as a subprocess, configured
by environment like production (``serve_env``), started with ``--write-interval 0`` (GitHub's
pause between writes would cap a test at one write a second), ready once ``/healthz`` answers.

Import it as ``tests.support.serve`` with the repository root on ``sys.path``. It must not
import the test fakes: callers bring their own fake GitHub and pass its URL.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

__all__ = [
    "ROOT",
    "ServeFailed",
    "free_port",
    "healthz",
    "load_git_repo",
    "post_webhook",
    "private_key_pem",
    "serve_env",
    "start_serve",
    "stop_serve",
    "wait_for",
]

ROOT = Path(__file__).resolve().parents[2]
#: the ``plangate`` console script without depending on where the venv put it
CODE = "import sys; from app.cli import main; sys.exit(main())"


class ServeFailed(AssertionError):
    """``plangate serve`` exited or never answered ``/healthz`` (its stderr is the message)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def private_key_pem() -> str:
    """A fresh RSA key for the App (PKCS#8 PEM), as GitHub hands one out."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def serve_env(
    *,
    api_url: str,
    secret: str,
    data_dir: Path,
    private_key: str,
    app_id: str = "42",
    **extra: str,
) -> dict[str, str]:
    """The server's environment: this process's, minus any ``GITHUB_*``/``PLANGATE_*`` that
    would leak in from the caller's shell, plus the App's settings."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "PLANGATE_"))}
    return {
        **keep,
        "GITHUB_APP_ID": app_id,
        "GITHUB_PRIVATE_KEY": private_key,
        "GITHUB_WEBHOOK_SECRET": secret,
        "GITHUB_API_URL": api_url,
        "PLANGATE_DATA_DIR": str(data_dir),
        **extra,
    }


def healthz(port: int, *, timeout: float = 2.0) -> dict[str, Any]:
    """``GET /healthz`` as JSON; ``{}`` when the server does not answer (yet)."""
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=timeout).json()
    except (httpx.HTTPError, ValueError):
        return {}


def start_serve(
    env: Mapping[str, str],
    port: int,
    *extra: str,
    log_level: str = "warning",
    stderr: int | None = subprocess.PIPE,
    ready_within: float = 60.0,
) -> subprocess.Popen[bytes]:
    """``plangate serve --port PORT --write-interval 0 EXTRA...``; returns once ``/healthz``
    answers 200. Raises ``ServeFailed`` with the server's stderr if it exits first, or after
    ``ready_within`` seconds (the process is killed)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CODE,
            "serve",
            "--port",
            str(port),
            "--log-level",
            log_level,
            "--write-interval",
            "0",
            *extra,
        ],
        cwd=ROOT,
        env=dict(env),
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    deadline = time.monotonic() + ready_within
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise ServeFailed(f"plangate serve exited {proc.returncode}: {err}")
        time.sleep(0.05)
    proc.kill()
    proc.wait(10)
    raise ServeFailed(f"plangate serve did not answer /healthz within {ready_within:.0f} s")


def stop_serve(proc: subprocess.Popen[bytes], *, timeout: float = 10.0) -> int:
    """SIGTERM (graceful: the worker finishes its delivery), then SIGKILL after ``timeout``."""
    if proc.poll() is None:
        proc.terminate()
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait(timeout)


def wait_for(predicate: Callable[[], bool], seconds: float = 30.0, *, every: float = 0.05) -> bool:
    """Poll ``predicate`` until true or ``seconds`` pass; the last answer is returned."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return predicate()


def load_git_repo(fake: Any, path: Path, full_name: str, *, default_branch: str = "master") -> None:
    """Copy every branch of the git repository at ``path`` into ``fake.repo(full_name)`` (any
    fake with ``repo(name).commit(files, branch=, sha=)``, e.g. ``ghfake.FakeGitHub``): each
    branch tip's files under its real commit SHA, so webhook payloads can name real SHAs."""
    import git

    repo = git.Repo(path)
    target = fake.repo(full_name)
    target.default_branch = default_branch
    for ref in repo.heads:
        commit = ref.commit
        files = {
            blob.path: blob.data_stream.read()
            for blob in commit.tree.traverse()
            if blob.type == "blob"
        }
        target.commit(files, branch=ref.name, sha=commit.hexsha)


def post_webhook(
    port: int,
    payload: Mapping[str, Any] | bytes,
    delivery: str,
    *,
    secret: str,
    event: str = "pull_request",
) -> httpx.Response:
    """``POST /webhook`` signed with ``secret`` (HMAC-SHA256 over the exact bytes sent)."""
    from app.server.webhooks import sign

    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return httpx.post(
        f"http://127.0.0.1:{port}/webhook",
        content=body,
        headers={
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": sign(secret.encode(), body),
            "Content-Type": "application/json",
        },
    )
