"""How much a slow lock renewal stalls the executor's event loop: on the loop vs off it.

``GitRefLocks`` over the git data fake of the tests (no HTTP), with GitHub answering the
renewal's ref update after ``--delay`` seconds (a slow or retrying GitHub). While the heartbeat
renews ``--renewals`` times, a probe task stands in for a running step: it sleeps 5 ms at a time
and records how late it wakes up (event-loop lag). Compared: ``renew`` called on the loop (the
old heartbeat) and ``renew_async`` (a worker thread, what the runner uses now). Prints the
probe's wake-ups, its worst and p99 lag per mode, and the ratio of the worst lags.

    .venv/bin/python benchmarks/lock_renewal.py [--delay 0.2] [--renewals 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.execute.github_locks import GitRefLocks
from tests.execute.gitrefs_fake import GitRefsFake

ROOT = Path(__file__).resolve().parents[1]
OPENAPI = json.loads((ROOT / "tests/fixtures/github/openapi-execute-subset.json").read_text())[
    "operations"
]
TICK = 0.005


class _Response:
    def __init__(self, data: Any) -> None:
        self.data = data


class SlowRefs:
    """``RefApi`` over the fake; the ref update (the CAS) takes ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        self.git = GitRefsFake(OPENAPI, lambda _op, _body: None)
        self.delay = delay

    def request(self, verb: str, path: str, *, body: Any = None) -> _Response:
        from app.errors import GitHubError

        sub = path.removeprefix("/repos/acme/ops")
        if verb == "PATCH":
            time.sleep(self.delay)  # blocking, as the HTTP call is
        status, payload = self.git.route(verb, sub, body) or (404, {"message": "no route"})
        if status >= 400:
            raise GitHubError(str(payload.get("message")), status=status)
        return _Response(payload)


async def _scenario(off_loop: bool, delay: float, renewals: int) -> list[float]:
    locks = GitRefLocks(SlowRefs(delay), "acme/ops", now=time.time, sleep=asyncio.sleep)
    assert locks.try_acquire(["db/orders"], "run-1", "plan") == []
    lags: list[float] = []
    done = asyncio.Event()

    async def probe() -> None:  # a running step: wakes every 5 ms
        while not done.is_set():
            start = time.perf_counter()
            await asyncio.sleep(TICK)
            lags.append(time.perf_counter() - start - TICK)

    async def heartbeat() -> None:
        for _ in range(renewals):
            held = await locks.renew_async("run-1") if off_loop else locks.renew("run-1")
            assert held == 1
            await asyncio.sleep(0.02)
        done.set()

    await asyncio.gather(probe(), heartbeat())
    locks.release("run-1")
    return lags


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=0.2, help="seconds GitHub takes (CAS)")
    parser.add_argument("--renewals", type=int, default=5)
    args = parser.parse_args()
    results = {}
    for name, off in (("renew on the loop (baseline)", False), ("renew_async (worker)", True)):
        lags = sorted(asyncio.run(_scenario(off, args.delay, args.renewals)))
        worst = lags[-1]
        p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
        results[name] = worst
        print(
            f"{name:30} wake-ups {len(lags):5}  worst lag {worst * 1000:8.1f} ms  "
            f"p99 {p99 * 1000:7.1f} ms  median {statistics.median(lags) * 1000:5.2f} ms"
        )
    base, new = results.values()
    print(f"ratio worst lag (worker / loop): {new / base:.3f}  (delay {args.delay:g} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
