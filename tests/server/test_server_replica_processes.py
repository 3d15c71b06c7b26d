"""Two real ``plangate serve`` processes sharing one PostgreSQL database (``PLANGATE_DATABASE_URL``)
against the fake GitHub over loopback HTTP: deliveries reach either replica, redeliveries the
other, both workers run; every head gets one set of check runs and both report a drained inbox.
"""

from __future__ import annotations

import copy
import os
import signal
import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "faults"))

from faultkit import NAMES, build_fake
from faultnet import FaultLayer
from ghfake import Pull
from srvkit import BASE, PLAN, POLICY, REPO, SECRET, webhook_fixture
from test_server_e2e import _free_port, _post, _start, _wait

pytestmark = pytest.mark.slow

HEADS = {n: f"{n:040x}" for n in range(3, 9)}


def _payload(number: int, head: str) -> dict:
    payload = copy.deepcopy(webhook_fixture("pull_request.opened"))
    payload["number"] = payload["pull_request"]["number"] = number
    payload["pull_request"]["head"]["sha"] = head
    payload["pull_request"]["base"]["sha"] = BASE
    return payload


def _depth(port: int) -> int | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json().get("inbox_depth")
    except (httpx.HTTPError, ValueError):
        return None


def test_two_serve_processes_share_the_work_once(tmp_path, private_key, pg_url):
    fake = build_fake()
    repo = fake.repo(REPO)
    for number, head in HEADS.items():
        plan = PLAN + f"# variant {number}\n".encode()
        files = {"README.md": "hi\n", "policies/teams.yaml": POLICY, "plans/hello.yaml": plan}
        repo.commit(files, sha=head)
        repo.pulls[number] = Pull(number, head, BASE, "master")
    server, api = FaultLayer(fake).serve()
    base_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "PLANGATE_"))},
        "GITHUB_APP_ID": "42",
        "GITHUB_PRIVATE_KEY": private_key,
        "GITHUB_WEBHOOK_SECRET": SECRET,
        "GITHUB_API_URL": api,
        "PLANGATE_DATABASE_URL": pg_url,
    }
    procs, ports = [], []
    try:
        for i in range(2):  # separate data dirs: nothing shared but the database
            ports.append(_free_port())
            env = {**base_env, "PLANGATE_DATA_DIR": str(tmp_path / f"replica-{i}")}
            procs.append(_start(env, ports[-1]))
        for i, (number, head) in enumerate(HEADS.items()):
            first, second = ports[i % 2], ports[(i + 1) % 2]
            assert _post(first, _payload(number, head), f"r-{number}").status_code == 202
            again = _post(second, _payload(number, head), f"r-{number}")
            assert again.status_code == 200 and again.json()["status"] == "duplicate"

        def finished() -> bool:
            done = all(set(fake.runs_for(h)) == set(NAMES) for h in HEADS.values())
            return done and all(_depth(p) == 0 for p in ports)

        assert _wait(finished, seconds=60)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(10)
        server.shutdown()
        server.server_close()
    for head in HEADS.values():
        created = [r["name"] for r in fake.check_runs.values() if r["head_sha"] == head]
        assert sorted(created) == sorted(NAMES), (head, created)  # one set, no duplicates
    assert not any((tmp_path / f"replica-{i}" / "inbox.sqlite3").exists() for i in range(2))
    assert fake.schema_errors == []
