"""End to end: a real ``plangate serve`` process, real HTTP, and a fake GitHub API on 127.0.0.1
serving a real git repository's contents. Includes SIGKILL between the 202 and processing.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import git
import httpx
import pytest
from ghfake import FakeGitHub, Pull, webhook_fixture
from srvkit import PLAN, ROOT, SECRET

from app.server.webhooks import sign

pytestmark = pytest.mark.slow

NAMES = {"plangate/validate", "plangate/policy", "plangate/cost", "plangate/approval"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _real_repo(path: Path) -> tuple[str, str]:
    """A git repository: master with policies/, branch ``changes`` adding a plan."""
    repo = git.Repo.init(path, initial_branch="master")
    with repo.config_writer() as cw:
        cw.set_value("user", "name", "Test").set_value("user", "email", "t@example.com")
    (path / "policies").mkdir()
    names = []
    for policy in sorted((ROOT / "policies").glob("*.yaml")):
        (path / "policies" / policy.name).write_bytes(policy.read_bytes())
        names.append(f"policies/{policy.name}")
    (path / "README.md").write_text("ops\n")
    repo.index.add([*names, "README.md"])
    base = repo.index.commit("base").hexsha
    repo.git.checkout("-b", "changes")
    (path / "plans").mkdir()
    (path / "plans" / "hello.yaml").write_bytes(PLAN)
    repo.index.add(["plans/hello.yaml"])
    head = repo.index.commit("add plan").hexsha
    return base, head


def _load_into_fake(fake: FakeGitHub, path: Path, full_name: str) -> None:
    repo = git.Repo(path)
    target = fake.repo(full_name)
    target.default_branch = "master"
    for ref in repo.heads:
        commit = ref.commit
        files = {
            blob.path: blob.data_stream.read()
            for blob in commit.tree.traverse()
            if blob.type == "blob"
        }
        target.commit(files, branch=ref.name, sha=commit.hexsha)


def _start(env: dict[str, str], port: int, *extra: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from app.cli import main; sys.exit(main())",
            "serve",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--write-interval",
            "0",
            *extra,
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode() if proc.stderr else "exited")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("server did not come up")


def _wait(predicate, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.fixture
def world(tmp_path, private_key):
    base, head = _real_repo(tmp_path / "repo")
    fake = FakeGitHub("http://127.0.0.1/api/v3")
    _load_into_fake(fake, tmp_path / "repo", "Codertocat/Hello-World")
    fake.repo("Codertocat/Hello-World").pulls[2] = Pull(2, head, base, "master", author="alice")
    server, api = fake.serve()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "PLANGATE_"))},
        "GITHUB_APP_ID": "42",
        "GITHUB_PRIVATE_KEY": private_key,
        "GITHUB_WEBHOOK_SECRET": SECRET,
        "GITHUB_API_URL": api,
        "PLANGATE_DATA_DIR": str(tmp_path / "data"),
    }
    payload = webhook_fixture("pull_request.opened")
    payload["pull_request"]["head"]["sha"] = head
    payload["pull_request"]["base"]["sha"] = base
    payload["pull_request"]["user"]["login"] = "alice"
    yield fake, env, payload, head
    server.shutdown()


@pytest.fixture
def audit_repo(tmp_path):
    git.Repo.init(tmp_path / "audit")
    return tmp_path / "audit"


def _post(port: int, payload: dict, delivery: str) -> httpx.Response:
    body = json.dumps(payload).encode()
    return httpx.post(
        f"http://127.0.0.1:{port}/webhook",
        content=body,
        headers={
            "X-GitHub-Event": "pull_request",
            "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": sign(SECRET.encode(), body),
            "Content-Type": "application/json",
        },
    )


def test_serve_end_to_end(world, audit_repo):
    fake, env, payload, head = world
    port = _free_port()
    proc = _start(env, port, "--audit-repo", str(audit_repo))
    try:
        assert _post(port, payload, "e2e-1").status_code == 202
        assert _wait(lambda: set(fake.runs_for(head)) == NAMES)
        assert _post(port, payload, "e2e-1").status_code == 200  # redelivery: no new runs
        runs = fake.runs_for(head)
        assert runs["plangate/validate"]["conclusion"] == "success"
        assert runs["plangate/policy"]["conclusion"] == "success"  # the real engine, base policy
        assert runs["plangate/approval"]["conclusion"] == "action_required"
        assert fake.schema_errors == []
        assert _wait(
            lambda: httpx.get(f"http://127.0.0.1:{port}/healthz").json()["inbox_depth"] == 0
        )
        assert len(fake.check_runs) == 4
        assert httpx.get(f"http://127.0.0.1:{port}/").status_code == 200  # the dashboard
        assert (
            "plangate_webhook_deliveries_received_total"
            in httpx.get(f"http://127.0.0.1:{port}/metrics").text
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


def test_sigkill_after_ack_processed_exactly_once_after_restart(world):
    fake, env, payload, head = world
    # GitHub is down: the delivery is acknowledged and stored but cannot be processed
    fake.fail("POST", r"/access_tokens$", status=503, times=10_000)
    port = _free_port()
    proc = _start(env, port)
    assert _post(port, payload, "kill-1").status_code == 202
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert fake.check_runs == {}
    fake.faults.clear()  # GitHub is back
    port = _free_port()
    proc = _start(env, port)
    try:
        assert _wait(lambda: set(fake.runs_for(head)) == NAMES)
        # once the inbox is empty nothing is left to process: the count below is final
        assert _wait(
            lambda: httpx.get(f"http://127.0.0.1:{port}/healthz").json()["inbox_depth"] == 0
        )
        assert len(fake.check_runs) == 4
        assert len(fake.calls_to("POST", r"/check-runs$")) == 4
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
