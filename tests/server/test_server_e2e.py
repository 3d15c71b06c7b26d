"""End to end: a real ``plangate serve`` process, real HTTP, and a fake GitHub API on 127.0.0.1
serving a real git repository's contents. Includes SIGKILL between the 202 and processing.
"""

from __future__ import annotations

import signal
from pathlib import Path

import git
import httpx
import pytest
from ghfake import FakeGitHub, Pull, webhook_fixture
from srvkit import PLAN, ROOT, SECRET

from tests.support.serve import free_port as _free_port
from tests.support.serve import load_git_repo, post_webhook, serve_env
from tests.support.serve import start_serve as _start
from tests.support.serve import wait_for as _wait

pytestmark = pytest.mark.slow

NAMES = {"plangate/validate", "plangate/policy", "plangate/cost", "plangate/approval"}
#: the helpers other server and fault tests import from here
__all__ = ["_free_port", "_post", "_start", "_wait"]


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


@pytest.fixture
def world(tmp_path, private_key):
    base, head = _real_repo(tmp_path / "repo")
    fake = FakeGitHub("http://127.0.0.1/api/v3")
    load_git_repo(fake, tmp_path / "repo", "Codertocat/Hello-World")
    fake.repo("Codertocat/Hello-World").pulls[2] = Pull(2, head, base, "master", author="alice")
    server, api = fake.serve()
    env = serve_env(api_url=api, secret=SECRET, data_dir=tmp_path / "data", private_key=private_key)
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
    return post_webhook(port, payload, delivery, secret=SECRET)


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
        # generous bounds (not timings): a loaded CI machine restarts the server slowly
        assert _wait(lambda: set(fake.runs_for(head)) == NAMES, 90)
        # once the inbox is empty nothing is left to process: the count below is final
        assert _wait(
            lambda: httpx.get(f"http://127.0.0.1:{port}/healthz").json()["inbox_depth"] == 0,
            90,
        )
        assert len(fake.check_runs) == 4
        assert len(fake.calls_to("POST", r"/check-runs$")) == 4
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
