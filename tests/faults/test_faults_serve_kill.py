"""SIGKILL of a real ``plangate serve`` at seeded random points of processing, restarted on the
same data dir: every acknowledged delivery is processed exactly once (one set of check runs per
head SHA), none is lost.
"""

from __future__ import annotations

import copy
import os
import random
import signal
import threading

import httpx
import pytest
from faultkit import NAMES, build_fake
from faultnet import FaultLayer
from ghfake import Pull
from srvkit import BASE, HEAD, PLAN, POLICY, REPO, SECRET, webhook_fixture
from test_server_e2e import _free_port, _post, _start, _wait

from app.server.inbox import Inbox

pytestmark = pytest.mark.slow

SEED = 20261125
PRS = {2: HEAD, 3: "3" * 40, 4: "4" * 40, 5: "5" * 40}


class Killer:
    """Kills the server when the API call number ``at`` reaches the fake (before it is applied)."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self.at: int | None = None
        self.calls = 0
        self.kills: list[tuple[int, str, str]] = []
        self.lock = threading.Lock()

    def __call__(self, method: str, path: str) -> bool:
        with self.lock:
            self.calls += 1
            if self.at is None or self.calls < self.at or self.pid is None:
                return False
            self.kills.append((self.calls, method, path))
            os.kill(self.pid, signal.SIGKILL)
            self.at, self.pid = None, None
            return True


def _payload(number: int, head: str) -> dict:
    payload = copy.deepcopy(webhook_fixture("pull_request.opened"))
    payload["number"] = number
    payload["pull_request"]["number"] = number
    payload["pull_request"]["head"]["sha"] = head
    payload["pull_request"]["base"]["sha"] = BASE
    return payload


def _healthz(port: int) -> dict:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return {}


def _finished(fake, port: int) -> bool:
    done = all(set(fake.runs_for(h)) == set(NAMES) for h in PRS.values())
    return done and _healthz(port).get("inbox_depth") == 0


def test_sigkill_at_random_points_processes_each_delivery_exactly_once(tmp_path, private_key):
    rng = random.Random(SEED)
    fake = build_fake()
    repo = fake.repo(REPO)
    for number, head in PRS.items():
        if head != HEAD:
            plan = PLAN + f"# variant {number}\n".encode()
            files = {"README.md": "hi\n", "policies/teams.yaml": POLICY, "plans/hello.yaml": plan}
            repo.commit(files, sha=head)
        repo.pulls[number] = Pull(number, head, BASE, "master")
    layer = FaultLayer(fake, seed=SEED)
    killer = Killer()
    layer.before = killer
    server, api = layer.serve()
    data = tmp_path / "data"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "PLANGATE_"))},
        "GITHUB_APP_ID": "42",
        "GITHUB_PRIVATE_KEY": private_key,
        "GITHUB_WEBHOOK_SECRET": SECRET,
        "GITHUB_API_URL": api,
        "PLANGATE_DATA_DIR": str(data),
    }
    proc = None
    try:
        port = _free_port()
        proc = _start(env, port)
        # a fault-free delivery makes ~12 API calls: kill at a seeded random call of the first
        # deliveries, then twice more at seeded random later calls of the restarted processes.
        # Each kill point is armed before the work it counts starts (before the posts, before a
        # restart), so how fast the server gets ahead of this thread does not move it.
        # (the pid is given after the posts: a point reached earlier kills at the next call)
        killer.at = killer.calls + rng.randint(1, 20)
        for number, head in PRS.items():
            assert _post(port, _payload(number, head), f"kill-{number}").status_code == 202
        killer.pid = proc.pid
        while True:
            _wait(lambda p=port: killer.pid is None or _finished(fake, p), seconds=40)
            if killer.pid is not None:
                break
            proc.wait(10)
            if len(killer.kills) < 3:  # a point reached before the pid is known: the next call
                killer.at = killer.calls + rng.randint(1, 15)
            port = _free_port()
            proc = _start(env, port)  # same data dir: resumes what the killed process left
            killer.pid = proc.pid
        assert _wait(lambda: _healthz(port).get("inbox_depth") == 0, seconds=40)
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        server.shutdown()
        server.server_close()

    assert len(killer.kills) == 3, killer.kills
    duplicates = 0
    for head in PRS.values():
        created = [r["name"] for r in fake.check_runs.values() if r["head_sha"] == head]
        assert set(created) == set(NAMES), (head, created)
        duplicates += len(created) - len(NAMES)
        runs = fake.runs_for(head)
        assert all(r["status"] == "completed" for r in runs.values())
        assert runs["plangate/validate"]["conclusion"] == "success"
    # a kill after GitHub created a run but before the inbox remembered its id: the resumed
    # delivery finds the run by its external_id and updates it (no second run of that name)
    assert duplicates == 0, duplicates
    print(f"kills={killer.kills} duplicate_runs={duplicates}")
    deliveries = Inbox.in_dir(data).list()
    assert sorted(d.id for d in deliveries) == sorted(f"kill-{n}" for n in PRS)
    assert {d.status for d in deliveries} == {"done"}  # acknowledged, none lost, none dead
    assert fake.schema_errors == []


def test_sigkill_between_create_and_remember_adopts_the_created_run(tmp_path, private_key):
    fake = build_fake()
    layer = FaultLayer(fake, seed=SEED)
    server, api = layer.serve()
    state: dict = {"pid": None, "done": False}
    original = fake.handle

    def handle(method, url, headers, body):
        out = original(method, url, headers, body)
        if method == "POST" and url.endswith("/check-runs") and not state["done"]:
            state["done"] = True  # applied on GitHub; the answer never reaches the server
            os.kill(state["pid"], signal.SIGKILL)
        return out

    fake.handle = handle
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "PLANGATE_"))},
        "GITHUB_APP_ID": "42",
        "GITHUB_PRIVATE_KEY": private_key,
        "GITHUB_WEBHOOK_SECRET": SECRET,
        "GITHUB_API_URL": api,
        "PLANGATE_DATA_DIR": str(tmp_path / "data"),
    }
    proc = None
    try:
        port = _free_port()
        proc = _start(env, port)
        state["pid"] = proc.pid
        assert _post(port, _payload(2, HEAD), "window-1").status_code == 202
        proc.wait(30)
        port = _free_port()
        proc = _start(env, port)
        assert _wait(lambda: _finished_one(fake, port), seconds=40)
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
        server.shutdown()
        server.server_close()
    created = [r["name"] for r in fake.check_runs.values() if r["head_sha"] == HEAD]
    assert sorted(created) == sorted(NAMES)
    # found through checks/list-for-ref, filtered to this App, and updated in place
    assert fake.calls_to("GET", rf"/commits/{HEAD}/check-runs$")
    assert {r["app"]["id"] for r in fake.runs_for(HEAD).values()} == {42}
    assert all(r["status"] == "completed" for r in fake.runs_for(HEAD).values())
    assert fake.schema_errors == []


def _finished_one(fake, port: int) -> bool:
    return set(fake.runs_for(HEAD)) == set(NAMES) and _healthz(port).get("inbox_depth") == 0
