"""An in-process Plangate server (the real ``create_app`` and worker) against the fake GitHub
served over real HTTP on 127.0.0.1 through the fault layer. Sleeps are recorded, not slept.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from faultnet import FaultLayer
from ghfake import FakeGitHub, Pull
from prometheus_client import CollectorRegistry
from srvkit import BASE, HEAD, PLAN, POLICY, REPO, SECRET, post

from app.github.client import HttpRetry
from app.server.app import Deps, create_app
from app.server.worker import WorkerPolicy
from app.settings import Settings

NAMES = ("plangate/validate", "plangate/policy", "plangate/cost", "plangate/approval")
#: without a policy engine configured the three gates fail closed; validate passes
EXPECTED = {
    "plangate/validate": "success",
    "plangate/policy": "failure",
    "plangate/cost": "failure",
    "plangate/approval": "failure",
}
#: adapter retries: small delays (recorded, never slept); 4 attempts per REST call
HTTP_RETRY = HttpRetry(max_attempts=4, initial_delay=0.01, max_delay=0.05)
WORKER = WorkerPolicy(max_attempts=5, initial_delay=0, max_delay=0)


def build_fake() -> FakeGitHub:
    """Repository with ``master`` (policies) and PR #2 adding ``plans/hello.yaml`` at HEAD."""
    fake = FakeGitHub("http://127.0.0.1/api/v3")
    repo = fake.repo(REPO)
    repo.default_branch = "master"
    repo.commit({"README.md": "hi\n", "policies/teams.yaml": POLICY}, branch="master", sha=BASE)
    repo.commit(
        {"README.md": "hi\n", "policies/teams.yaml": POLICY, "plans/hello.yaml": PLAN},
        branch="changes",
        sha=HEAD,
    )
    repo.pulls[2] = Pull(2, HEAD, BASE, "master")
    return fake


@dataclass
class World:
    fake: FakeGitHub
    faults: FaultLayer
    deps: Deps
    client: TestClient
    server: Any
    sleeps: list[float] = field(default_factory=list)
    offset: list[float] = field(default_factory=lambda: [0.0])

    def post(self, event: str, payload: dict[str, Any], **kw: Any) -> Any:
        return post(self.client, event, payload, **kw)

    def drain(self) -> int:
        return self.deps.worker.drain()

    def creations(self, head_sha: str) -> int:
        """Check runs created (successful ``POST .../check-runs``) on ``head_sha``."""
        return sum(1 for r in self.fake.check_runs.values() if r["head_sha"] == head_sha)

    def conclusions(self, head_sha: str) -> dict[str, str | None]:
        return {n: r.get("conclusion") for n, r in self.fake.runs_for(head_sha).items()}


def make_world(tmp_path: Path, private_key: str, *, seed: int = 0) -> World:
    fake = build_fake()
    faults = FaultLayer(fake, seed=seed)
    server, api = faults.serve()
    settings = Settings(
        github_app_id=42,
        github_private_key=private_key,
        github_webhook_secret=SECRET,
        github_api_url=api,
        data_dir=tmp_path / "data",
    )
    sleeps: list[float] = []
    offset = [0.0]
    deps = Deps.from_settings(
        settings,
        http_retry=HTTP_RETRY,
        worker_policy=WORKER,
        sleep=sleeps.append,
        clock=lambda: time.time() + offset[0],
        start_worker=False,
        registry=CollectorRegistry(),
    )
    client = TestClient(create_app(settings, deps))
    return World(fake, faults, deps, client, server, sleeps, offset)
