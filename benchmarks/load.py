"""Load test: a real ``plangate serve`` on loopback takes a burst of signed deliveries while its
worker processes them against a fake GitHub on loopback; nothing acknowledged may be lost.

Run: ``.venv/bin/python benchmarks/load.py [--deliveries 10000] [--senders 100] [--prs 250]``

* **Server**: ``plangate serve`` as a subprocess (the real CLI: signature check, durable SQLite
  WAL inbox with ``synchronous=FULL``, 202, the 2 worker threads, the policy engine), configured
  by environment like production, ``--write-interval 0`` (GitHub's 1 s pause between writes
  per installation would cap processing at one write a second); started by
  ``tests/support/serve.py``, the start-up the end-to-end tests and ``benchmarks/e2e.py`` share.
* **GitHub**: ``tests/github/ghfake.FakeGitHub`` behind ``tests/faults/faultnet.FaultLayer``
  (``--fault-rate`` of its calls answered 502 before they are applied), served in *its own
  process* so the senders do not share a GIL with it. Every request body is validated against
  the ``@octokit/openapi`` schema of its operation.
* **Deliveries**: real ``@octokit/webhooks-examples`` shapes. Each of ``--prs`` pull requests is
  ``opened``, then pushed to (``synchronize`` with ``before``/``after``) again and again, with a
  ``pull_request_review.submitted`` now and then; 1% are redeliveries (an ``X-GitHub-Delivery``
  already sent), which must be acknowledged once and stored once. Sent round-robin over the
  pull requests by ``--senders`` concurrent keep-alive connections.

Accounting after the inbox drained (read from the inbox database, not from the server's word):
every delivery acknowledged 202 is stored; each stored delivery ended ``done`` (processed) or
``superseded`` (deliberately coalesced: a newer head of the same pull request arrived before it
started); none is ``dead``, ``queued`` or ``processing``; redeliveries were acknowledged without
being stored again; and every pull request's newest head has its four check runs completed on
the fake GitHub, one of each. RSS of the server process (``/proc/<pid>/status``: VmRSS before,
sampled peak, after; VmHWM) and the ack rate and latency are printed. Exit 1 if anything was
lost or the inbox did not drain within ``--cap`` seconds (default 120).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import hashlib
import json
import multiprocessing
import random
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT, ROOT / "tests" / "github", ROOT / "tests" / "faults"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from tests.support.serve import (  # noqa: E402  (after the sys.path set-up above)
    ServeFailed,
    free_port,
    private_key_pem,
    serve_env,
    start_serve,
    stop_serve,
)
from tests.support.serve import healthz as _healthz  # noqa: E402

SECRET = "load-test-secret"
REPO = "Codertocat/Hello-World"  # the webhook examples' repository
BASE = "f95f852bd8fca8fcc58a9a2d6c842781e32a215e"
NAMES = ("plangate/validate", "plangate/policy", "plangate/cost", "plangate/approval")


def head_sha(pr: int, rev: int) -> str:
    return hashlib.sha1(f"pr-{pr}-rev-{rev}".encode()).hexdigest()


# -- the fake GitHub, in its own process -------------------------------------------------------


def _fake_main(conn: Any, prs: int, revisions: list[int], fault_rate: float, seed: int) -> None:
    """Serve the fake; answer ``summary`` with the check runs per head; exit on ``stop``."""
    from faultnet import FaultLayer
    from ghfake import FakeGitHub, FakeRepo, Pull, git_blob_sha

    class IndexedRepo(FakeRepo):
        """``FakeRepo`` with its blob and tree lookups indexed: the stock ones scan every
        commit per request, and this repository has one commit per pushed head."""

        def __init__(self, full_name: str) -> None:
            super().__init__(full_name)
            self._blobs: dict[str, bytes] = {}
            self._trees: dict[str, tuple[str, str]] = {}
            self._indexed: set[int] = set()

        def commit(self, files, *, branch=None, sha=None):  # type: ignore[no-untyped-def]
            sha = super().commit(files, branch=branch, sha=sha)
            snapshot = self.commits[sha]
            if id(snapshot) not in self._indexed:  # heads of one PR share one snapshot
                self._indexed.add(id(snapshot))
                for content in snapshot.values():
                    self._blobs[git_blob_sha(content)] = content
                prefixes = {""} | {
                    "/".join(p.split("/")[:i]) + "/"
                    for p in snapshot
                    for i in range(1, len(p.split("/")))
                }
                for prefix in prefixes:
                    self._trees.setdefault(self.tree(sha, prefix)[0], (sha, prefix))
            return sha

        def blobs(self) -> dict[str, bytes]:
            return self._blobs

        def tree_by_sha(self, sha: str) -> tuple[str, str] | None:
            return self._trees.get(sha)

    plan = (ROOT / "plans" / "local-hello.yaml").read_bytes()
    policies = {
        f"policies/{p.name}": p.read_bytes() for p in sorted((ROOT / "policies").glob("*.yaml"))
    }
    fake = FakeGitHub("http://127.0.0.1/api/v3")
    repo = IndexedRepo(REPO)
    fake.repos[REPO] = repo
    repo.default_branch = "master"
    base_files = {"README.md": b"ops\n", **policies}
    repo.commit(base_files, branch="master", sha=BASE)
    for pr in range(1, prs + 1):
        text = plan.replace(b"id: local-hello", f"id: load-pr-{pr}".encode())
        snapshot = {**base_files, f"plans/pr-{pr}.yaml": text}
        for rev in range(revisions[pr - 1]):
            repo.commits[head_sha(pr, rev)] = snapshot  # one shared snapshot per PR
            if rev == 0:
                repo.commit(snapshot, sha=head_sha(pr, 0))
        repo.pulls[pr] = Pull(pr, head_sha(pr, revisions[pr - 1] - 1), BASE, "master")
    layer = FaultLayer(fake, seed=seed)
    if fault_rate > 0:
        for method in ("GET", "POST", "PATCH"):
            layer.add(method, r"^/repos/", status=502, probability=fault_rate)
    server, api = layer.serve()
    conn.send(api)
    while True:
        command = conn.recv()
        if command == "summary":
            with fake._lock:
                runs = [
                    (r["head_sha"], r["name"], r.get("external_id"), r["status"])
                    for r in fake.check_runs.values()
                ]
                calls: dict[str, int] = {}
                for call in fake.calls:
                    calls[call.method] = calls.get(call.method, 0) + 1
                conn.send(
                    {
                        "runs": runs,
                        "calls": calls,
                        "injected": len(layer.injected),
                        "schema_errors": list(fake.schema_errors[:5]),
                    }
                )
        elif command == "stop":
            server.shutdown()
            conn.send("stopped")
            return


# -- deliveries --------------------------------------------------------------------------------


@dataclass
class Item:
    delivery: str
    request: bytes
    pr: int
    rev: int
    redelivery: bool = False


def build_deliveries(
    total: int, prs: int, port: int, seed: int
) -> tuple[list[Item], list[int], dict[str, int]]:
    """Round-robin over PRs: opened, then synchronize (new head each), a review now and then,
    1% redeliveries. Returns (items in send order, revisions per PR, kinds count)."""
    from ghfake import webhook_fixture

    from app.server.webhooks import sign

    rng = random.Random(seed)
    opened = webhook_fixture("pull_request.opened")
    synchronize = webhook_fixture("pull_request.synchronize")
    review = webhook_fixture("pull_request_review.submitted")
    revisions = [0] * (prs + 1)
    items: list[Item] = []
    kinds: dict[str, int] = {}
    sent: list[Item] = []
    i = 0
    while len(items) < total:
        pr = i % prs + 1
        i += 1
        if len(sent) > 200 and rng.random() < 0.01:  # a redelivery, long after the original
            again = rng.choice(sent[:-200])
            items.append(Item(again.delivery, again.request, again.pr, again.rev, True))
            kinds["redelivery"] = kinds.get("redelivery", 0) + 1
            continue
        rev = revisions[pr]
        if rev > 0 and rng.random() < 0.1:
            payload, event, kind = copy.deepcopy(review), "pull_request_review", "review"
            payload["pull_request"]["head"]["sha"] = head_sha(pr, rev - 1)
            rev -= 1
        elif rev == 0:
            payload, event, kind = copy.deepcopy(opened), "pull_request", "opened"
            payload["pull_request"]["head"]["sha"] = head_sha(pr, 0)
            revisions[pr] = 1
        else:
            payload, event, kind = copy.deepcopy(synchronize), "pull_request", "synchronize"
            payload["before"] = head_sha(pr, rev - 1)
            payload["after"] = head_sha(pr, rev)
            payload["pull_request"]["head"]["sha"] = head_sha(pr, rev)
            revisions[pr] = rev + 1
        payload["number"] = pr
        payload["pull_request"]["number"] = pr
        payload["pull_request"]["base"]["sha"] = BASE
        payload["pull_request"]["base"]["ref"] = "master"
        payload["repository"]["full_name"] = REPO
        body = json.dumps(payload).encode()
        delivery = str(uuid.UUID(int=rng.getrandbits(128)))
        head = (
            f"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"X-GitHub-Event: {event}\r\nX-GitHub-Delivery: {delivery}\r\n"
            f"X-Hub-Signature-256: {sign(SECRET.encode(), body)}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        item = Item(delivery, head.encode() + body, pr, rev)
        items.append(item)
        sent.append(item)
        kinds[kind] = kinds.get(kind, 0) + 1
    return items, [max(1, r) for r in revisions[1:]], kinds


async def blast(port: int, items: list[Item], senders: int) -> tuple[float, list[tuple]]:
    """``senders`` keep-alive connections; (elapsed, [(item, status, latency s)])."""
    queue: asyncio.Queue[Item] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)
    results: list[tuple[Item, int, float]] = []

    async def sender() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while True:
                try:
                    item = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                t0 = time.perf_counter()
                writer.write(item.request)
                status_line = await reader.readline()
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode().partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                await reader.readexactly(length)
                status = int(status_line.split()[1]) if status_line else 0
                results.append((item, status, time.perf_counter() - t0))
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(senders)))
    return time.perf_counter() - start, results


@dataclass(frozen=True)
class _Pull:
    """What ``check_external_id`` reads of a pull request."""

    number: int
    head_sha: str


# -- the server process ------------------------------------------------------------------------


def rss_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in kB, from ``/proc/<pid>/status``."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


# -- the run -----------------------------------------------------------------------------------


@dataclass
class Report:
    deliveries: int
    senders: int
    prs: int
    kinds: dict[str, int]
    send_s: float = 0.0
    acks_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)
    drained: bool = False
    drain_s: float = 0.0
    rss_before_kb: int = 0
    rss_peak_sampled_kb: int = 0
    rss_after_kb: int = 0
    hwm_kb: int = 0
    stored: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    lost: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    heads_complete: int = 0
    duplicate_runs: int = 0
    runs: int = 0
    api_calls: dict[str, int] = field(default_factory=dict)
    injected: int = 0

    @property
    def ok(self) -> bool:
        return self.drained and not self.lost and not self.problems

    def lines(self) -> list[str]:
        acked = self.statuses.get(202, 0)
        done = self.by_status.get("done", 0)
        coalesced = self.by_status.get("superseded", 0)
        return [
            f"load: {self.deliveries} deliveries ({self.kinds}) to {self.prs} PRs from "
            f"{self.senders} concurrent senders",
            f"  acks: {self.acks_per_s:.0f}/s over {self.send_s:.1f} s, p50 {self.p50_ms:.1f} ms, "
            f"p99 {self.p99_ms:.1f} ms, statuses {self.statuses}",
            f"  inbox drained: {'yes' if self.drained else 'NO'} ({self.drain_s:.1f} s after the "
            f"last ack)",
            f"  accounting: {acked} acked 202 = {self.stored} stored = {done} processed + "
            f"{coalesced} coalesced (superseded by a newer head) + "
            f"{self.stored - done - coalesced} other; "
            f"{self.statuses.get(200, 0)} redeliveries acked 200 and not stored again; "
            f"lost: {len(self.lost)}",
            f"  check runs: {self.heads_complete}/{self.prs} PRs' newest heads have all four "
            f"completed; {self.runs} check runs = exactly those of the processed deliveries "
            f"(matched by external_id); published twice: {self.duplicate_runs}",
            f"  fake GitHub: {sum(self.api_calls.values())} REST calls {self.api_calls}, "
            f"{self.injected} faults injected",
            f"  server RSS: before {self.rss_before_kb / 1024:.1f} MiB, peak sampled "
            f"{self.rss_peak_sampled_kb / 1024:.1f} MiB, after {self.rss_after_kb / 1024:.1f} MiB"
            f" (VmHWM {self.hwm_kb / 1024:.1f} MiB)",
            *(f"  PROBLEM: {p}" for p in self.problems[:10]),
            "  nothing lost, inbox drained" if self.ok else "  LOAD TEST FAILED",
        ]


def run(
    *,
    deliveries: int,
    senders: int,
    prs: int,
    cap: float = 120.0,
    fault_rate: float = 0.0,
    seed: int = 20261125,
) -> Report:
    deadline = time.monotonic() + cap
    port = free_port()
    items, revisions, kinds = build_deliveries(deliveries, prs, port, seed)
    report = Report(deliveries, senders, prs, kinds)
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    fake = ctx.Process(
        target=_fake_main, args=(child, prs, revisions, fault_rate, seed), daemon=True
    )
    fake.start()
    api = parent.recv()
    proc = None
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        env = serve_env(api_url=api, secret=SECRET, data_dir=data, private_key=private_key_pem())
        try:
            proc = start_serve(env, port)
            report.rss_before_kb = rss_kb(proc.pid)["VmRSS"]
            peak = [report.rss_before_kb]
            stop = threading.Event()

            def sample() -> None:
                while not stop.wait(0.25):
                    try:
                        peak.append(rss_kb(proc.pid)["VmRSS"])
                    except OSError:
                        return

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            elapsed, results = asyncio.run(blast(port, items, senders))
            acked_at = time.monotonic()
            report.send_s = elapsed
            report.acks_per_s = len(results) / elapsed
            lat = sorted(r[2] * 1000 for r in results)
            report.p50_ms = statistics.median(lat)
            report.p99_ms = lat[max(0, int(len(lat) * 0.99) - 1)]
            for _, status, _ in results:
                report.statuses[status] = report.statuses.get(status, 0) + 1
            while time.monotonic() < deadline:
                if _healthz(port).get("inbox_depth") == 0:
                    report.drained = True
                    break
                time.sleep(0.1)
            report.drain_s = time.monotonic() - acked_at
            stop.set()
            sampler.join()
            mem = rss_kb(proc.pid)
            report.rss_after_kb, report.hwm_kb = mem["VmRSS"], mem["VmHWM"]
            report.rss_peak_sampled_kb = max(peak)
            stop_serve(proc, timeout=30)
        finally:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)
        parent.send("summary")
        summary = parent.recv()
        parent.send("stop")
        parent.recv()
        fake.join(10)
        _account(report, data / "inbox.sqlite3", results, summary, revisions)
    return report


def _account(
    report: Report,
    db_path: Path,
    results: list[tuple[Item, int, float]],
    summary: dict[str, Any],
    revisions: list[int],
) -> None:
    from app.server.evaluate import check_external_id

    db = sqlite3.connect(str(db_path))
    try:
        rows = {
            d: (status, event, body)
            for d, status, event, body in db.execute(
                "SELECT id, status, event, body FROM deliveries"
            )
        }
    finally:
        db.close()
    report.stored = len(rows)
    for status, _, _ in rows.values():
        report.by_status[status] = report.by_status.get(status, 0) + 1
    acked = {item.delivery for item, status, _ in results if status == 202}
    report.lost = sorted(acked - set(rows))
    if set(rows) - {item.delivery for item, _, _ in results}:
        report.problems.append("the inbox holds deliveries nobody sent")
    for item, status, _ in results:
        if status not in (200, 202):
            report.problems.append(f"delivery {item.delivery} answered {status}")
        if status == 200 and not item.redelivery:
            report.problems.append(f"first delivery {item.delivery} answered 200 (duplicate?)")
    unfinished = {s: n for s, n in report.by_status.items() if s not in ("done", "superseded")}
    if unfinished:
        report.problems.append(f"deliveries not finished: {unfinished}")
    # every processed delivery published its checks exactly once (the check run's external_id
    # names the delivery), a coalesced one published none
    expected: dict[str, str] = {}
    for delivery, (status, event, body) in rows.items():
        if status != "done":
            continue
        pr = json.loads(bytes(body))["pull_request"]
        pull = _Pull(int(pr["number"]), str(pr["head"]["sha"]))
        for name in NAMES if event == "pull_request" else ("plangate/approval",):
            expected[check_external_id(REPO, pull, name, delivery)] = delivery  # type: ignore[arg-type]
    seen: dict[str, int] = {}
    newest: dict[str, dict[str, str]] = {}
    for head, name, external_id, status in summary["runs"]:
        seen[external_id] = seen.get(external_id, 0) + 1
        newest.setdefault(head, {})[name] = status
        if status != "completed":
            report.problems.append(f"check run {name} on {head[:12]} left {status}")
    report.runs = len(summary["runs"])
    report.duplicate_runs = sum(n - 1 for n in seen.values())
    missing = set(expected) - set(seen)
    stray = set(seen) - set(expected)
    if report.duplicate_runs:
        report.problems.append(f"{report.duplicate_runs} check runs published twice")
    if missing:
        report.problems.append(f"{len(missing)} checks of processed deliveries never published")
    if stray:
        report.problems.append(f"{len(stray)} check runs from deliveries not processed")
    for pr, count in enumerate(revisions, start=1):
        runs = newest.get(head_sha(pr, count - 1), {})
        if set(runs) == set(NAMES) and set(runs.values()) == {"completed"}:
            report.heads_complete += 1
        else:
            report.problems.append(f"PR #{pr} newest head: check runs {runs}")
    if summary["schema_errors"]:
        report.problems.append(f"request bodies off the OpenAPI schema: {summary['schema_errors']}")
    report.api_calls = summary["calls"]
    report.injected = summary["injected"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--deliveries", type=int, default=10_000)
    parser.add_argument("--senders", type=int, default=100)
    parser.add_argument("--prs", type=int, default=250)
    parser.add_argument("--cap", type=float, default=120.0, help="seconds, from the first send")
    parser.add_argument("--fault-rate", type=float, default=0.0, help="share of 502s from GitHub")
    parser.add_argument("--seed", type=int, default=20261125)
    args = parser.parse_args()
    try:
        report = run(
            deliveries=args.deliveries,
            senders=args.senders,
            prs=args.prs,
            cap=args.cap,
            fault_rate=args.fault_rate,
            seed=args.seed,
        )
    except ServeFailed as exc:
        print(f"load: {exc}", file=sys.stderr)
        return 1
    print("\n".join(report.lines()))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
