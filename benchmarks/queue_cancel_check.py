"""Benchmark: what the per-step cancel check costs the executor.

Run: ``.venv/bin/python benchmarks/queue_cancel_check.py [--steps 1000] [--repeat 3]
[--github-latency-ms 20]``

The runner checks before every step whether the run was cancelled (``Runner._cancelled``: the
state store's status, plus, under ``plangate execute``, the App's cancel record on the
attestation branch). Two measurements, each against a baseline run in the same process:

1. **state check**: a chain of ``noop`` steps through the real ``Runner`` (SQLite WAL, locks,
   event log) with the check, against the same runner with the check disabled (what it cost
   before queue cancels stopped runs). Reported: ms/step both ways, the difference, the ratio.
2. **GitHub check**: the same chain with ``cancel_requested`` = ``_CancelRequests`` over a fake
   attestation store whose every read sleeps ``--github-latency-ms`` (a GitHub round trip),
   throttled (one read per 5 s, what the executor uses) and unthrottled (a read per step).
   Reported: reads made, ms/step, ratio to the state-check run.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.actions.registry import ActionRegistry
from app.execute.actions.noop import NoopAction
from app.execute.locks import LockManager
from app.execute.ports import (
    AllowAllPolicy,
    JsonlEventSink,
    RecordingIncidents,
    StaticApprovalGate,
)
from app.execute.runner import Runner, RunOptions
from app.execute.state import StateStore
from benchmarks.executor import make_plan


class _SlowStore:
    """Stands in for ``AttestationStore``: every read is one (slow) GitHub round trip."""

    reads = 0

    def __init__(self, client: Any, *, branch: str) -> None:
        pass

    def read(self, path: str, *, at: str | None = None) -> bytes | None:
        _SlowStore.reads += 1
        time.sleep(_SlowStore.latency)
        return None

    latency = 0.02


async def _run(loaded, data_dir: Path, *, check: str, interval: float = 5.0) -> float:
    state = StateStore.open(data_dir)
    runner = Runner(
        implementations={"noop": NoopAction()},
        registry=ActionRegistry.builtins(),
        state=state,
        locks=LockManager(state.conn, now=time.time, sleep=asyncio.sleep),
        gate=StaticApprovalGate(),
        policy=AllowAllPolicy(),
        events=JsonlEventSink(data_dir / "events.jsonl", now=time.time),
        incidents=RecordingIncidents(),
        now=time.time,
        sleep=asyncio.sleep,
        rng=random.Random(0),
        new_run_id=lambda: "bench",
        options=RunOptions(max_parallel=1),
    )
    if check == "off":
        runner._cancelled = lambda digest: None  # type: ignore[method-assign]
    elif check == "github":
        import app.github.attestations as attestations
        from app.cli import execute as cli_execute

        original = attestations.AttestationStore
        attestations.AttestationStore = _SlowStore  # type: ignore[misc,assignment]
        runner.cancel_requested = cli_execute._CancelRequests(
            github=type("G", (), {"client": None})(), branch="b", trust=None, interval=interval
        )
    start = time.perf_counter()
    try:
        result = await runner.run(loaded)
    finally:
        if check == "github":
            attestations.AttestationStore = original  # type: ignore[misc]
        state.close()
    if result.status != "succeeded":
        raise SystemExit(f"benchmark run failed: {result.status}: {result.reason}")
    return time.perf_counter() - start


def _best(loaded, repeat: int, **kw: Any) -> float:
    best = float("inf")
    for _ in range(repeat):
        tmp = Path(tempfile.mkdtemp(prefix="plangate-bench-"))
        try:
            best = min(best, asyncio.run(_run(loaded, tmp, **kw)))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--github-latency-ms", type=float, default=20.0)
    args = parser.parse_args()
    n = args.steps
    loaded = make_plan("chain", n)
    _SlowStore.latency = args.github_latency_ms / 1000

    off = _best(loaded, args.repeat, check="off")
    on = _best(loaded, args.repeat, check="state")
    print(f"per-step cancel check, chain of {n} noop steps, best of {args.repeat}")
    print(f"{'run':<34} {'ms/step':>9} {'ratio':>7}")
    print(f"{'baseline: no cancel check':<34} {off / n * 1000:>9.3f} {1.0:>7.2f}")
    print(f"{'state store check (every step)':<34} {on / n * 1000:>9.3f} {on / off:>7.2f}")
    print(f"  overhead: {(on - off) / n * 1000:.3f} ms/step")

    small = max(1, min(n, 100))
    loaded_small = make_plan("chain", small)
    base_small = _best(loaded_small, args.repeat, check="state")
    for label, interval in (
        ("github check, throttled 5 s", 5.0),
        ("github check, every step", 0.0),
    ):
        _SlowStore.reads = 0
        took = _best(loaded_small, 1, check="github", interval=interval)
        print(
            f"{label + f' ({small} steps)':<34} {took / small * 1000:>9.3f} "
            f"{took / base_small:>7.2f}  reads={_SlowStore.reads} "
            f"(latency {args.github_latency_ms:.0f} ms)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
