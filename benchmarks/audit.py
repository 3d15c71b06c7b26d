"""Benchmark: the git audit store at 100,000 events, next to a plain JSON Lines file.

Run: ``.venv/bin/python benchmarks/audit.py [--events 100000] [--batch 100] [--commit-every 1000]``

In one temporary git repository, in the same process, it measures:

* ``append``: ``GitAuditStore.append`` in batches of ``--batch`` drafts (chain, hash with RFC 8785,
  journal write + fsync per batch), committing automatically every ``--commit-every`` events,
  then a final ``commit()``; events per second;
* ``plain file``: the same events' JSON lines written to a plain file per batch (+ fsync per
  batch), the baseline of the ratio;
* ``index build``: the first query, which builds the SQLite index from git;
* ``list --plan``: a filtered query answered from the index (median of 5), and the same through
  the real CLI (``plangate audit list --plan P --limit 0 --format json``, output discarded);
* ``verify``: the full verification (commits + hash chain of every event).

Targets (issue 8): append >= 5,000 events/s; filtered query < 200 ms with the index; full
verify < 5 s. Drafts are built before timing (producers build them anyway).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import git

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.audit.events import Actor, AuditEventDraft, ChainHead, chain
from app.audit.git_store import GitAuditStore
from app.audit.query import AuditQuery
from app.cli import main as cli_main

TARGET_APPEND_PER_S = 5000
TARGET_QUERY_MS = 200
TARGET_VERIFY_S = 5.0
TYPES = ("run.started", "step.started", "step.succeeded", "step.retried", "run.finished")


def make_drafts(n: int) -> list[AuditEventDraft]:
    t0 = datetime(2026, 9, 1, tzinfo=UTC)
    return [
        AuditEventDraft(
            type=TYPES[i % len(TYPES)],
            timestamp=t0 + timedelta(seconds=90 * i),  # spans about four months
            actor=Actor(kind="app", id="plangate[bot]") if i % 3 else Actor(kind="user", id="ana"),
            correlation_id=f"run-{i // 50:06d}",
            plan_id=f"plan-{i % 20:02d}",
            plan_digest="sha256:" + f"{i % 20:064x}",
            inputs_digest="sha256:" + f"{i:064x}",
            step=f"step-{i % 8}",
            team=("payments", "search", "infra")[i % 3],
            environment=("prod", "staging")[i % 2],
            payload={"attempt": 1 + i % 3, "duration_ms": i % 997, "note": "ok"},
        )
        for i in range(n)
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--commit-every", type=int, default=1000)
    args = parser.parse_args()
    n, batch = args.events, args.batch

    print(f"building {n:,} drafts ...", flush=True)
    drafts = make_drafts(n)

    with tempfile.TemporaryDirectory(prefix="plangate-audit-bench-") as tmp:
        repo_path = Path(tmp) / "repo"
        git.Repo.init(repo_path)
        store = GitAuditStore(repo_path, batch_size=args.commit_every)

        # -- baseline: the same JSON lines to a plain file, fsync per batch ----------------
        events = chain(drafts, ChainHead())  # same lines the store writes
        plain = Path(tmp) / "plain.jsonl"
        start = time.perf_counter()
        fd = os.open(plain, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        for i in range(0, n, batch):
            lines = [e.to_json_line() for e in events[i : i + batch]]
            os.write(fd, ("\n".join(lines) + "\n").encode())
            os.fsync(fd)
        os.close(fd)
        plain_s = time.perf_counter() - start
        del events

        # -- the git store ---------------------------------------------------------------
        start = time.perf_counter()
        for i in range(0, n, batch):
            store.append(drafts[i : i + batch])
        store.commit()
        append_s = time.perf_counter() - start
        commits = len(store.commit_chain())

        plan = AuditQuery(plan_id="plan-07")
        start = time.perf_counter()
        first = store.query(plan)
        index_s = time.perf_counter() - start
        times = []
        for _ in range(5):
            start = time.perf_counter()
            found = store.query(plan)
            times.append(time.perf_counter() - start)
        assert found == first and len(found) == n // 20
        query_ms = statistics.median(times) * 1000

        run_q = AuditQuery(correlation_id="run-000777", types=("step.succeeded",))
        start = time.perf_counter()
        store.query(run_q)
        run_query_ms = (time.perf_counter() - start) * 1000

        argv = ["audit", "list", "--repo", str(repo_path), "--plan", "plan-07", "--limit", "0"]
        argv += ["--format", "json"]
        cli_times = []
        for _ in range(3):
            start = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                assert cli_main(argv) == 0
            cli_times.append(time.perf_counter() - start)
        cli_ms = statistics.median(cli_times) * 1000

        start = time.perf_counter()
        result = store.verify()
        verify_s = time.perf_counter() - start
        assert result.ok and result.count == n, result.first_break
        store.close()

    append_rate = n / append_s
    plain_rate = n / plain_s
    print()
    print(
        f"events: {n:,} in batches of {batch}, "
        f"a commit every {args.commit_every} ({commits} commits)"
    )
    print(
        f"append (git store):   {append_s:8.2f} s  {append_rate:10,.0f} events/s   "
        f"target >= {TARGET_APPEND_PER_S:,}  "
        f"{'OK' if append_rate >= TARGET_APPEND_PER_S else 'MISS'}"
    )
    print(f"append (plain file):  {plain_s:8.2f} s  {plain_rate:10,.0f} events/s")
    print(f"ratio git store / plain file time: {append_s / plain_s:.1f}x")
    print(f"index build (first query, {n:,} events): {index_s * 1000:8.0f} ms")
    print(
        f"list --plan (index, {len(found):,} of {n:,} events): {query_ms:8.1f} ms   "
        f"target < {TARGET_QUERY_MS} ms  {'OK' if query_ms < TARGET_QUERY_MS else 'MISS'}"
    )
    print(f"list --run --event (index): {run_query_ms:8.1f} ms")
    print(f"plangate audit list --plan (CLI, JSON out): {cli_ms:8.1f} ms")
    print(
        f"verify (commits + chain): {verify_s:8.2f} s   target < {TARGET_VERIFY_S:.0f} s  "
        f"{'OK' if verify_s < TARGET_VERIFY_S else 'MISS'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
