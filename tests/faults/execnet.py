"""``plangate execute`` against a fake GitHub served on 127.0.0.1 through the fault layer.

The executor's fake (``tests/execute/test_execute_github.FakeGitHub``: pulls for a commit,
contents, check runs, comments, issues and the git data API the lock refs use, all with
``@octokit/openapi`` shapes and request-schema validation) is adapted to the interface
``faultnet.FaultLayer`` serves (``handle``/``calls``/``prefix``/``base``), so the real REST
transport (PyGithub ``Requester`` over ``requests``) meets real HTTP errors and TCP resets.

``ExecWorld`` is that repository: a real git checkout (base with the shipped policies plus a test
signing key, the PR head adding one plan, the squash merge on ``main``), the DSSE approval on the
attestation branch, and the served fake. Used by ``test_faults_execute_outage.py`` and
``benchmarks/e2e.py``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from cryptography.hazmat.primitives import serialization
from faultnet import FaultLayer
from ghfake import Call

from app.signing.local_key import LocalKeySigner, generate_private_key
from tests.execute.test_execute_github import BRANCH, PLAN, PR, REPO, TOKEN, World

__all__ = ["BRANCH", "PLAN", "PR", "REPO", "TOKEN", "ExecWorld", "ExecuteApi", "plan_text"]


class ExecuteApi:
    """The executor's fake GitHub with the attributes ``FaultLayer`` expects of a fake."""

    def __init__(self, gh: Any, token: str = TOKEN) -> None:
        self.gh = gh
        self.token = token
        self.prefix = ""
        self.base = ""
        self.calls: list[Call] = []
        #: (monotonic seconds, method, path, status) of every answered request
        self.timeline: list[tuple[float, str, str, int]] = []
        self._lock = threading.Lock()

    def handle(
        self, method: str, url: str, headers: Mapping[str, str], raw: str | None
    ) -> tuple[int, dict[str, str], str]:
        parts = urlsplit(url)
        path = unquote(parts.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        body = json.loads(raw) if raw else None
        auth = {k.lower(): v for k, v in headers.items()}.get("authorization")
        with self._lock:
            if auth != f"token {self.token}":
                status, payload = 401, {"message": "Bad credentials"}
            else:
                self.gh.requests.append((method, path, body))
                status, payload = self.gh._route(method, path, query, body)
            self.calls.append(Call(method, path, status, body))
            self.timeline.append((time.monotonic(), method, path, status))
        return status, {"Content-Type": "application/json"}, json.dumps(payload)


def plan_text(steps: int, log: Path, *, sleep: dict[int, float] | None = None) -> str:
    """``local-hello`` with ``steps`` chained shell steps, each appending ``sN`` to ``log``
    (step ``N`` sleeps ``sleep[N]`` seconds first). Locks ``local/scratch``."""
    sleep = sleep or {}
    out = [
        "apiVersion: plangate.dev/v1",
        "kind: Plan",
        "id: local-hello",
        "title: Append to a log, step by step",
        "team: platform",
        "environment: local",
        "resources: [local/scratch]",
        "steps:",
    ]
    for i in range(1, steps + 1):
        pause = f"sleep {sleep[i]}; " if i in sleep else ""
        out += [
            f"  - id: s{i}",
            "    action: shell",
            f"    with: {{run: [sh, -c, {json.dumps(f'{pause}echo s{i} >> {log}')}]}}",
            "    timeout: 60s",
            "    retry: {max_attempts: 1}",
            "    compensate: {none: test step appends to a log file only}",
        ]
        if i > 1:
            out.append(f"    needs: [s{i - 1}]")
    return "\n".join(out) + "\n"


class ExecWorld:
    """A checkout at the merge commit, its approval, and the fake GitHub served on loopback."""

    def __init__(self, root: Path, text: str, *, seed: int = 0) -> None:
        key = generate_private_key()
        pem = (
            key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )
        self.root = root / "checkout"
        self.root.mkdir(parents=True)
        self.data = root / "data"
        self.world = World(self.root, pem, LocalKeySigner(key))
        self.world.build(plan_text=text)
        self.world.attest()
        self.gh = self.world.gh
        self.api = ExecuteApi(self.gh)
        self.faults = FaultLayer(self.api, seed=seed)  # type: ignore[arg-type]
        self.server, self.url = self.faults.serve()

    def env(self, **extra: str) -> dict[str, str]:
        """The workflow step's environment: token, repository, API URL (no event file)."""
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "PLANGATE_"))}
        return {
            **keep,
            "GITHUB_TOKEN": TOKEN,
            "GITHUB_REPOSITORY": REPO,
            "GITHUB_SERVER_URL": "https://github.com",
            "GITHUB_API_URL": self.url,
            **extra,
        }

    def argv(self, *extra: str) -> list[str]:
        return [
            "execute",
            "--before",
            self.world.base,
            "--after",
            self.world.after,
            "--data-dir",
            str(self.data),
            "--no-push-audit",
            "--attest-run",
            "off",
            "--format",
            "json",
            *extra,
        ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def check_runs(gh: Any) -> list[dict[str, Any]]:
    """Every ``plangate/execute`` check run: ``{"created": body, "updates": [bodies]}``."""
    return [r for _, r in sorted(gh.check_runs.items())]


def final(run: Mapping[str, Any]) -> Mapping[str, Any] | None:
    done = [u for u in run["updates"] if u.get("status") == "completed"]
    return done[-1] if done else None
