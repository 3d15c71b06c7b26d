"""Benchmark: the webhook inbox on SQLite (baseline) and on PostgreSQL with 1 and 2 replicas.

Run: ``.venv/bin/python benchmarks/inbox_backends.py [--deliveries 3000] [--prs 100]``

For each backend the same ``--deliveries`` reviews (real ``@octokit/webhooks-examples``
payload) spread over ``--prs`` pull requests are (1) stored through ``add_many`` in group-commit
batches of 20, as the webhook endpoint does, then (2) drained by worker threads doing
``claim`` + ``complete`` with no other work, so the numbers are the store's own cost:

* ``sqlite``: ``Inbox`` in a temp dir (WAL, ``synchronous=FULL``), 2 threads (the default);
* ``pg x1``: one ``PostgresInbox`` replica, 2 threads;
* ``pg x2``: two ``PostgresInbox`` replicas on the same database, 2 threads each.

PostgreSQL is a throwaway local cluster started as the tests do (``tests/pgcluster.py``), with
``fsync=off`` — so its numbers are the protocol's cost (round trips, locking), not a disk's.
Prints stores/s and claims/s per backend and the ratio to SQLite, and checks that every
delivery was processed exactly once.

Then (3) the webhook endpoint's ack path: ``--senders`` coroutines each send their share of the
deliveries through one ``GroupCommitter`` (what ``/webhook`` awaits before its 202) on a fresh
store per backend, while a ticker coroutine sleeps 1 ms in a loop and records how late it wakes
up: that lateness is how long the event loop was blocked (by the inserts, and by whatever runs
on the loop rather than on the commit thread). Prints acks/s and the ticker's p99/max lateness.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "github"))

from ghfake import webhook_fixture  # noqa: E402

from app.server.inbox import Inbox, InboxStore  # noqa: E402
from app.server.ingest import GroupCommitter  # noqa: E402
from app.server.webhooks import Event  # noqa: E402


def _deliveries(n: int, prs: int) -> list[tuple[Event, bytes, float]]:
    out = []
    for i in range(n):
        payload = webhook_fixture("pull_request_review.submitted")
        payload["pull_request"]["number"] = i % prs + 1
        out.append(
            (
                Event("pull_request_review", f"d{i}", payload),
                json.dumps(payload).encode(),
                1.0,
            )
        )
    return out


def _run(replicas: list[InboxStore], items: list, threads: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    for k in range(0, len(items), 20):
        replicas[(k // 20) % len(replicas)].add_many(items[k : k + 20])
    stored = time.perf_counter() - t0
    seen: Counter[str] = Counter()
    lock = threading.Lock()

    def work(inbox: InboxStore) -> None:
        idle = 0
        while idle < 20:
            d = inbox.claim(now=10.0)
            if d is None:
                idle += 1
                time.sleep(0.001)
                continue
            idle = 0
            inbox.complete(d.id, now=11.0)
            with lock:
                seen[d.id] += 1

    t1 = time.perf_counter()
    pool = [threading.Thread(target=work, args=(r,)) for r in replicas for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    drained = time.perf_counter() - t1
    assert len(seen) == len(items) and set(seen.values()) == {1}, "lost or duplicated"
    assert replicas[0].counts() == {"done": len(items)}
    return len(items) / stored, len(items) / drained


def _acks(inbox: InboxStore, items: list, senders: int) -> tuple[float, float, float]:
    """Acks/s through the group committer, and the loop's p99 and max stall (ms)."""
    committer = GroupCommitter(inbox)
    lateness: list[float] = []

    async def main() -> float:
        done = False

        async def ticker() -> None:
            while not done:
                t = time.perf_counter()
                await asyncio.sleep(0.001)
                lateness.append(time.perf_counter() - t - 0.001)

        async def sender(share: list) -> None:
            for event, body, now in share:
                assert await committer.add(event, body, now=now)

        tick = asyncio.ensure_future(ticker())
        await asyncio.sleep(0.01)
        t0 = time.perf_counter()
        await asyncio.gather(*(sender(items[i::senders]) for i in range(senders)))
        elapsed = time.perf_counter() - t0
        done = True
        await tick
        return elapsed

    elapsed = asyncio.run(main())
    committer.stop()
    assert inbox.counts() == {"queued": len(items)}
    lateness.sort()
    p99 = lateness[int(len(lateness) * 0.99)] if lateness else 0.0
    return len(items) / elapsed, p99 * 1000, (lateness[-1] if lateness else 0.0) * 1000


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deliveries", type=int, default=3000)
    parser.add_argument("--prs", type=int, default=100)
    parser.add_argument("--senders", type=int, default=50)
    args = parser.parse_args()
    items = _deliveries(args.deliveries, args.prs)

    from app.server.inbox_pg import PostgresInbox
    from tests.pgcluster import _start, _stop, find_pg_bin

    results: dict[str, tuple[float, float]] = {}
    acks: dict[str, tuple[float, float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = Inbox.in_dir(Path(tmp))
        results["sqlite"] = _run([sqlite], items, threads=2)
        sqlite.close()
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = Inbox.in_dir(Path(tmp))
        acks["sqlite"] = _acks(sqlite, items, args.senders)
        sqlite.close()

    bin_dir = find_pg_bin()
    if bin_dir is None:
        print("PostgreSQL binaries not found (apt-get install postgresql): sqlite only")
    else:
        server = _start(bin_dir)
        try:
            import psycopg

            for name, n in (("pg x1", 1), ("pg x2", 2)):
                db = name.replace(" ", "_")
                with psycopg.connect(server.url(), autocommit=True) as conn:
                    conn.execute(f"CREATE DATABASE {db}")
                replicas = [PostgresInbox(server.url(db)) for _ in range(n)]
                results[name] = _run(replicas, items, threads=2)
                for r in replicas:
                    r.close()
            with psycopg.connect(server.url(), autocommit=True) as conn:
                conn.execute("CREATE DATABASE acks")
            inbox = PostgresInbox(server.url("acks"))
            acks["pg x1"] = _acks(inbox, items, args.senders)
            inbox.close()
        finally:
            _stop(bin_dir, server)

    base_store, base_claim = results["sqlite"]
    print(f"{args.deliveries} deliveries over {args.prs} pull requests")
    print(f"{'backend':8} {'stored/s':>10} {'x sqlite':>9} {'claimed+done/s':>15} {'x sqlite':>9}")
    for name, (store, claim) in results.items():
        print(
            f"{name:8} {store:10.0f} {store / base_store:9.2f} {claim:15.0f} "
            f"{claim / base_claim:9.2f}"
        )
    print("every delivery processed exactly once on every backend")
    base_acks = acks["sqlite"][0]
    print(f"webhook ack path: {args.senders} concurrent senders through GroupCommitter")
    print(f"{'backend':8} {'acks/s':>10} {'x sqlite':>9} {'loop stall p99 ms':>18} {'max ms':>8}")
    for name, (rate, p99, worst) in acks.items():
        print(f"{name:8} {rate:10.0f} {rate / base_acks:9.2f} {p99:18.1f} {worst:8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
