"""Several ``plangate serve`` replicas on one PostgreSQL inbox: claims, leases, ordering.

The replicas here are separate ``PostgresInbox`` instances (own connections, own claim tokens),
in threads or in separate processes, on one database of the session's throwaway cluster.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
from srvkit import webhook_fixture

from app.server.inbox_pg import PostgresInbox
from app.server.webhooks import Event

ROOT = Path(__file__).resolve().parents[2]


def _event(delivery: str, *, number: int, sha: str, name: str = "pull_request") -> Event:
    if name == "pull_request":
        payload = webhook_fixture("pull_request.synchronize")
        payload["pull_request"]["head"]["sha"] = sha
    else:
        payload = webhook_fixture("pull_request_review.submitted")
    payload["pull_request"]["number"] = number
    return Event(name, delivery, payload)


def _body(event: Event) -> bytes:
    return json.dumps(dict(event.payload)).encode()


def test_two_replicas_process_each_delivery_exactly_once_in_pr_order(pg_url):
    """Two inboxes x 4 threads claim while deliveries keep arriving through both: every
    delivery is processed once, none is lost, and a pull request's deliveries never overlap
    and run in arrival order."""
    replicas = [PostgresInbox(pg_url, heartbeat=False) for _ in range(2)]
    prs, per_pr = 12, 10
    total = prs * per_pr
    processed: list[tuple[str, str]] = []  # (delivery id, replica)
    in_flight: dict[str, str] = {}  # pull request -> delivery being processed
    overlaps: list[str] = []
    order: dict[str, list[int]] = {}
    lock = threading.Lock()
    added = threading.Event()

    def producer(replica: PostgresInbox, parity: int) -> None:
        # reviews only: they never supersede, so every delivery must reach "done"
        for i in range(per_pr):
            for pr in range(prs):
                if (pr + i) % 2 == parity:
                    event = _event(f"pr{pr}-{i}", number=pr + 1, sha="", name="pull_request_review")
                    replica.add(event, _body(event), now=1.0)

    def consumer(replica: PostgresInbox, name: str) -> None:
        idle = 0
        while idle < 50:
            delivery = replica.claim(now=10.0)
            if delivery is None:
                idle = idle + 1 if added.is_set() else 0
                time.sleep(0.002)
                continue
            idle = 0
            key = str(delivery.order_key)
            with lock:
                if key in in_flight:
                    overlaps.append(f"{delivery.id} while {in_flight[key]}")
                in_flight[key] = delivery.id
                order.setdefault(key, []).append(delivery.seq)
            time.sleep(0.001)  # "work"
            with lock:
                del in_flight[key]
                processed.append((delivery.id, name))
            replica.complete(delivery.id, now=11.0)

    producers = [threading.Thread(target=producer, args=(replicas[p], p)) for p in range(2)]
    consumers = [
        threading.Thread(target=consumer, args=(replicas[i % 2], f"replica-{i % 2}"))
        for i in range(8)
    ]
    for t in consumers + producers:
        t.start()
    for t in producers:
        t.join()
    added.set()
    for t in consumers:
        t.join(60)
    ids = [d for d, _ in processed]
    assert len(ids) == total and len(set(ids)) == total  # each once, none lost
    assert overlaps == []  # never two deliveries of one pull request at once
    assert all(seqs == sorted(seqs) for seqs in order.values())  # in arrival order
    assert {r for _, r in processed} == {"replica-0", "replica-1"}  # both did work
    assert replicas[0].counts() == {"done": total}
    for r in replicas:
        r.close()


def test_expired_lease_is_retaken_and_the_late_owner_cannot_overwrite(pg_url):
    a = PostgresInbox(pg_url, heartbeat=False, lease=30)
    b = PostgresInbox(pg_url, heartbeat=False, lease=30)
    event = _event("d1", number=2, sha="1" * 40)
    a.add(event, _body(event), now=1.0)
    later = _event("d2", number=2, sha="", name="pull_request_review")
    a.add(later, _body(later), now=1.0)
    first = a.claim(now=100.0)
    assert first is not None and first.id == "d1"
    # replica a stops renewing (dead, or paused): within the lease nobody else may take d1,
    # and d2 waits behind it (same pull request)
    assert b.claim(now=129.9) is None
    assert b.resume(now=129.9) == 0  # a starting replica leaves live claims alone
    retaken = b.claim(now=130.0)
    assert retaken is not None and retaken.id == "d1" and retaken.attempts == 2
    a.complete("d1", now=131.0)  # too late: b holds it now
    assert b.get("d1").status == "processing"
    assert b.claim(now=131.0) is None  # d2 still waits for d1
    b.complete("d1", now=132.0)
    assert b.get("d1").status == "done"
    assert a.claim(now=132.0).id == "d2"
    a.close()
    b.close()


def test_resume_requeues_only_expired_claims(pg_url):
    a = PostgresInbox(pg_url, heartbeat=False, lease=30)
    for n in (1, 2):
        event = _event(f"d{n}", number=n, sha=f"{n}" * 40)
        a.add(event, _body(event), now=1.0)
    c = PostgresInbox(pg_url, heartbeat=False, lease=100)
    assert a.claim(now=0.0).id == "d1"  # lease until 30
    assert c.claim(now=0.0).id == "d2"  # lease until 100
    b = PostgresInbox(pg_url, heartbeat=False)
    assert b.resume(now=60.0) == 1
    assert b.get("d1").status == "queued" and b.get("d2").status == "processing"
    for inbox in (a, b, c):
        inbox.close()


def test_heartbeat_keeps_a_live_replicas_claim(pg_url):
    a = PostgresInbox(pg_url, lease=0.6)  # heartbeat every 0.2 s, on the wall clock
    b = PostgresInbox(pg_url, heartbeat=False)
    event = _event("d1", number=2, sha="1" * 40)
    a.add(event, _body(event), now=1.0)
    assert a.claim(now=time.time()) is not None
    time.sleep(1.0)  # longer than the lease: only renewal keeps it
    assert b.claim(now=time.time()) is None
    a.close()  # the replica goes away: its heartbeat stops
    time.sleep(0.8)
    retaken = b.claim(now=time.time())
    assert retaken is not None and retaken.id == "d1"
    b.close()


def test_concurrent_redeliveries_through_two_replicas_stored_once(pg_url):
    replicas = [PostgresInbox(pg_url, heartbeat=False) for _ in range(2)]
    results: dict[str, list[bool]] = {}
    lock = threading.Lock()

    def send(i: int) -> None:
        delivery = f"d{i % 20}"  # each id through both replicas at once
        event = _event(delivery, number=i % 20, sha=f"{i % 20:040x}")
        stored = replicas[i % 2].add_many([(event, _body(event), 1.0)])[0]
        with lock:
            results.setdefault(delivery, []).append(stored)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(sorted(v) == [False, True] for v in results.values())
    assert replicas[1].counts() == {"queued": 20}
    for r in replicas:
        r.close()


_REPLICA = """
import json, os, sys, time
from app.server.inbox_pg import PostgresInbox
url, name, crash_after = sys.argv[1], sys.argv[2], int(sys.argv[3])
inbox = PostgresInbox(url, lease=1.0)
done = []
while True:
    d = inbox.claim(now=time.time())
    if d is None:
        if inbox.depth() == 0:
            break
        time.sleep(0.01)
        continue
    if len(done) == crash_after:
        print(json.dumps({"done": done, "crashed_holding": d.id}), flush=True)
        os._exit(0)  # dies holding the claim: no complete, no heartbeat any more
    done.append(d.id)
    inbox.complete(d.id, now=time.time())
print(json.dumps({"done": done}), flush=True)
"""


@pytest.mark.slow
def test_replica_processes_one_dies_holding_a_claim_the_other_finishes(pg_url):
    seed = PostgresInbox(pg_url, heartbeat=False)
    total = 60
    for i in range(total):
        event = _event(f"d{i}", number=i % 15 + 1, sha="", name="pull_request_review")
        seed.add(event, _body(event), now=1.0)

    def start(name: str, crash_after: int) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", _REPLICA, pg_url, name, str(crash_after)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )

    def result(proc: subprocess.Popen[str]) -> dict:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        return json.loads(out.strip().splitlines()[-1])

    # replica 1 processes ten deliveries, then dies holding its eleventh claim ...
    crashed = result(start("r1", 10))
    # ... and two more replicas, started together, share the rest and retake the orphan
    r2, r3 = (result(p) for p in [start("r2", 10_000), start("r3", 10_000)])
    done = crashed["done"] + r2["done"] + r3["done"]
    assert len(crashed["done"]) == 10
    assert sorted(done) == sorted(f"d{i}" for i in range(total))  # each once, none lost
    orphan = crashed["crashed_holding"]
    assert orphan in r2["done"] + r3["done"]  # retaken once the dead replica's lease ran out
    assert seed.get(orphan).attempts == 2
    assert seed.counts() == {"done": total}
    with psycopg.connect(pg_url) as conn:
        (held,) = conn.execute(
            "SELECT COUNT(*) FROM plangate_deliveries WHERE claim_token IS NOT NULL"
        ).fetchone()
    assert held == 0
    seed.close()


def test_two_server_replicas_publish_one_set_of_check_runs_per_head(settings, fake, pg_url):
    """Two full servers (webhook endpoint + worker) on one database: each delivery reaches one
    replica and GitHub's redelivery the other; both workers drain at once. Every pull request
    gets exactly one set of the four check runs, and the inbox ends all done."""
    import copy

    from fastapi.testclient import TestClient
    from ghfake import Pull
    from pydantic import SecretStr
    from srvkit import BASE, PLAN, POLICY, REPO, create_app, make_deps, post

    from app.observability import metrics

    names = {"plangate/validate", "plangate/policy", "plangate/cost", "plangate/approval"}
    shared = settings.model_copy(update={"database_url": SecretStr(pg_url)})
    repo = fake.repo(REPO)
    heads = {n: f"{n:040x}" for n in range(3, 9)}
    for number, head in heads.items():
        plan = PLAN + f"# variant {number}\n".encode()
        repo.commit(
            {"README.md": "hi\n", "policies/teams.yaml": POLICY, "plans/hello.yaml": plan},
            sha=head,
        )
        repo.pulls[number] = Pull(number, head, BASE, "master")
    replicas = [make_deps(shared) for _ in range(2)]
    clients = [TestClient(create_app(shared, d)) for d in replicas]
    for i, (number, head) in enumerate(heads.items()):
        payload = copy.deepcopy(webhook_fixture("pull_request.opened"))
        payload["number"] = payload["pull_request"]["number"] = number
        payload["pull_request"]["head"]["sha"] = head
        payload["pull_request"]["base"]["sha"] = BASE
        first, second = clients[i % 2], clients[(i + 1) % 2]
        assert post(first, "pull_request", payload, delivery=f"d{number}").status_code == 202
        redelivered = post(second, "pull_request", payload, delivery=f"d{number}")
        assert redelivered.status_code == 200 and redelivered.json()["status"] == "duplicate"
    drained: list[int] = []
    workers = [
        threading.Thread(target=lambda d=d: drained.append(d.worker.drain())) for d in replicas
    ]
    for t in workers:
        t.start()
    for t in workers:
        t.join(60)
    assert sum(drained) == len(heads)  # each delivery processed once, by one replica
    for head in heads.values():
        created = [r["name"] for r in fake.check_runs.values() if r["head_sha"] == head]
        assert sorted(created) == sorted(names), head
    assert replicas[0].inbox.counts() == {"done": len(heads)}
    for d in replicas:
        d.inbox.close()
    metrics.INBOX_DEPTH.set_function(lambda: 0)  # not left pointing at a closed inbox


def test_a_replica_holds_a_bounded_number_of_connections(pg_url):
    """/healthz and /metrics run in a pool of up to 40 threads: the inbox must not open a
    database connection per thread."""
    inbox = PostgresInbox(pg_url, heartbeat=False)
    barrier = threading.Barrier(40)

    def probe() -> None:
        barrier.wait()
        for _ in range(5):
            inbox.depth()
            inbox.counts()

    threads = [threading.Thread(target=probe) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with psycopg.connect(pg_url) as conn:
        (others,) = conn.execute(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        ).fetchone()
    assert 1 <= others <= 8
    inbox.close()
