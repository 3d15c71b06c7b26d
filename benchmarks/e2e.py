"""End-to-end benchmark: a pull request's four check runs, and a merged 100-step plan's execution,
over real HTTP against a fake GitHub on 127.0.0.1.

Run: ``.venv/bin/python benchmarks/e2e.py [--repeat 5] [--steps 100]``

**PR side.** A real ``plangate serve`` process (``tests/support/serve.py``: the CLI, configured by
environment, SQLite inbox, worker threads) and ``tests/github/ghfake.FakeGitHub`` serving the
files of a real git repository (base ``main`` with the shipped ``policies/``; one branch per
repetition adding ``plans/e2e.yaml``, a chain of ``--steps`` shell steps). The benchmark posts a
signed ``pull_request.opened`` (the ``@octokit/webhooks-examples`` payload pointed at that
branch's head) and waits until ``plangate/validate``, ``plangate/policy``, ``plangate/cost`` and
``plangate/approval`` are completed on the fake. The fake stamps every request (start and end,
``time.monotonic``, the same clock as the benchmark), which splits the time:

* ``ack``: ``POST /webhook`` sent -> 202 received (signature check, durable insert);
* ``queue wait``: 202 -> the worker's first GitHub request;
* ``read PR``: first request -> end of the last read (the installation token and the base
  commit's ``policies/`` in one GraphQL query when cold, then the changed files and the plan
  blob; an ``opened`` pull request has no reviews to read);
* ``evaluate``: last read -> first check-run write (validate, policy, cost, the approval gate
  with its team-membership lookups, rendering);
* ``publish``: first -> last check-run write (4 creates, completed);
* ``in the fake``: the share of the total spent inside the fake answering (GitHub's own time).

The server's ``plangate_webhook_processing_seconds`` (``/metrics``) is printed next to it.
Repetition 1 is a cold server (no installation token, nothing cached); the others are warm.

**Merge side.** ``plangate execute`` as a real subprocess (``tests/faults/execnet.ExecWorld``: a
git checkout at the squash-merge commit, the DSSE approval on the attestation branch, the
executor's fake GitHub behind ``faultnet`` with no faults) runs the same ``--steps`` plan, git-ref
resource locks on the fake, and pushes the audit ref to a bare repository (``file://``, as
``GITHUB_SERVER_URL``). Split from the fake's timeline and the run's ``events.jsonl``:

* ``start-up``: process start -> ``plangate/execute`` created (imports, git diff, policies);
* ``attestation + policy``: check run created -> run requested (the merged PR, the attestation
  fetched and verified, policy re-evaluated on the default branch);
* ``locks``: run requested -> run started (lock refs taken on the fake);
* ``steps``: run started -> run completed (re-verification, a policy check before each step,
  the steps, throttled live check-run updates);
* ``lock release``; ``audit push`` (commit and ``git push`` of ``plangate/audit``);
* ``check run + comment``: the final ``plangate/execute`` update(s) and the PR comment;
* ``exit``: the last request -> the process ended (the JSON result, interpreter shutdown).

**Baselines**, measured in the same run: ``plangate check`` of the same plan for the PR side, as
a process and warm (``app.cli.main`` in this process once its modules are loaded: the same work
without the interpreter's start-up); ``plangate run`` of the same plan locally (a process, local
key attestation, audit in the local repository) for the merge side. Printed: median and p90 over
``--repeat`` repetitions, REST calls by operation, and the ratios. Exit 1 if any phase fails: a
non-202, a check run missing or wrong (validate, policy and cost must succeed; approval is
``action_required``, nobody approved), a request body off the OpenAPI schema, ``execute`` not
succeeding or its check run not ``success``, a step not run once, the audit ref not pushed.

Both fakes answer with ``TCP_NODELAY`` (GitHub's front ends do): ``http.server`` writes the
headers and the body separately, and without it Nagle's algorithm meets the client's delayed
ACK and adds about 40 ms to every call, which would be the fake's cost, not Plangate's.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import re
import shutil
import socketserver
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT, ROOT / "tests" / "github", ROOT / "tests" / "faults"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

# see the module docstring: the fakes' answers must not wait for a delayed ACK
socketserver.StreamRequestHandler.disable_nagle_algorithm = True

from execnet import REPO as EXEC_REPO  # noqa: E402  (after the sys.path set-up above)
from execnet import ExecWorld, check_runs, final, plan_text  # noqa: E402
from ghfake import FakeGitHub, Pull, webhook_fixture  # noqa: E402

from tests.support.serve import (  # noqa: E402
    CODE,
    ServeFailed,
    free_port,
    healthz,
    load_git_repo,
    post_webhook,
    private_key_pem,
    serve_env,
    start_serve,
    stop_serve,
    wait_for,
)

SECRET = "e2e-benchmark-secret"
PR_REPO = "Codertocat/Hello-World"  # the webhook examples' repository
NAMES = ("plangate/validate", "plangate/policy", "plangate/cost", "plangate/approval")
EXPECTED = {
    "plangate/validate": "success",
    "plangate/policy": "success",
    "plangate/cost": "success",
    "plangate/approval": "action_required",  # nobody approved yet
}
AUTHOR = "alice"  # a member of team platform in the shipped policies (may enqueue its plans)


class Failed(Exception):
    """A phase did not do what it must; the message says which and what was seen."""


# -- helpers -----------------------------------------------------------------------------------

_OPERATIONS = [
    (re.compile(r"/app/installations/\d+/access_tokens$"), "installation token"),
    (re.compile(r"^/graphql$"), "graphql"),
    (re.compile(r"/commits/[0-9a-f]{40}/pulls$"), "pulls for commit"),
    (re.compile(r"/commits/[0-9a-f]{40}/check-runs$"), "check runs for ref"),
    (re.compile(r"/check-runs/\d+$"), "check run"),
    (re.compile(r"/check-runs$"), "check runs"),
    (re.compile(r"/pulls/\d+/files$"), "pull files"),
    (re.compile(r"/pulls/\d+/reviews$"), "pull reviews"),
    (re.compile(r"/pulls/\d+/commits$"), "pull commits"),
    (re.compile(r"/pulls/\d+$"), "pull"),
    (re.compile(r"/git/blobs/[0-9a-f]{40}$"), "git blob"),
    (re.compile(r"/git/trees/[0-9a-f]{40}$"), "git tree"),
    (re.compile(r"/git/(trees|commits|blobs)$"), "git create {0}"),
    (re.compile(r"/git/refs?/plangate/locks/"), "lock ref"),
    (re.compile(r"/git/refs?/heads/"), "branch ref"),
    (re.compile(r"/git/refs$"), "git create ref"),
    (re.compile(r"/contents/"), "contents"),
    (re.compile(r"/orgs/[^/]+/teams/[^/]+/members"), "team members"),
    (re.compile(r"/collaborators/[^/]+/permission$"), "collaborator permission"),
    (re.compile(r"/issues/\d+/comments$"), "issue comments"),
    (re.compile(r"/issues$"), "issues"),
]


def operation(method: str, path: str) -> str:
    """``POST check runs``: the REST operation a request is, without ids and SHAs."""
    path = path.split("?", 1)[0]
    for rx, name in _OPERATIONS:
        m = rx.search(path)
        if m:
            return f"{method} {name.format(*m.groups())}"
    return f"{method} {path}"


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p90 of 5 values is the 5th)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def run_cli(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> tuple[int, str, float]:
    """``plangate ARGS`` as a process: (exit code, stdout + stderr, seconds)."""
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", CODE, *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - t0


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def e2e_plan(steps: int, number: int, log: Path) -> str:
    """``plan_text(steps)`` under its own id per pull request, so every head differs."""
    return plan_text(steps, log).replace("id: local-hello", f"id: e2e-pr-{number}", 1)


# -- PR side -----------------------------------------------------------------------------------


class TimedFake(FakeGitHub):
    """``FakeGitHub`` that stamps each request: (start, end, method, path, status)."""

    def __init__(self, base: str) -> None:
        super().__init__(base)
        self.timeline: list[tuple[float, float, str, str, int]] = []

    def handle(
        self, method: str, url: str, headers: dict[str, str], body: str | None
    ) -> tuple[int, dict[str, str], str]:
        start = time.monotonic()
        status, out_headers, payload = super().handle(method, url, headers, body)
        path = url.split("?", 1)[0]
        if path == self.graphql_path:
            path = "/graphql"
        elif self.prefix and path.startswith(self.prefix):
            path = path[len(self.prefix) :]
        self.timeline.append((start, time.monotonic(), method, path, status))
        return status, out_headers, payload

    def completed(self, head: str) -> dict[str, str | None]:
        with self._lock:
            runs = self.runs_for(head)
        return {n: r.get("conclusion") for n, r in runs.items() if r["status"] == "completed"}


PR_PHASES = ("ack", "queue wait", "read PR", "evaluate", "publish", "total", "in the fake")


@dataclass
class PrSample:
    phases: dict[str, float]
    processing: float
    calls: Counter[str]


def _processing_sum(port: int) -> float:
    import httpx

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    m = re.search(
        r'^plangate_webhook_processing_seconds_sum\{event="pull_request"\} (\S+)$', text, re.M
    )
    return float(m.group(1)) if m else 0.0


def _pr_repo(path: Path, steps: int, repeat: int) -> tuple[str, list[str]]:
    """base on ``main`` (the shipped policies), one branch per repetition adding the plan."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.name", "Benchmark")
    git(path, "config", "user.email", "benchmark@example.com")
    shutil.copytree(ROOT / "policies", path / "policies")
    (path / "README.md").write_text("ops\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "base")
    base = git(path, "rev-parse", "HEAD")
    heads = []
    for n in range(1, repeat + 1):
        git(path, "checkout", "-q", "-b", f"pr-{n}", base)
        (path / "plans").mkdir(exist_ok=True)
        (path / "plans" / "e2e.yaml").write_text(e2e_plan(steps, n, path / "log"))
        git(path, "add", "-A")
        git(path, "commit", "-q", "-m", f"plan for PR #{n}")
        heads.append(git(path, "rev-parse", "HEAD"))
    git(path, "checkout", "-q", "main")
    return base, heads


def pr_side(tmp: Path, steps: int, repeat: int) -> list[PrSample]:
    base, heads = _pr_repo(tmp / "pr-repo", steps, repeat)
    fake = TimedFake("http://127.0.0.1/api/v3")
    load_git_repo(fake, tmp / "pr-repo", PR_REPO, default_branch="main")
    for n, head in enumerate(heads, start=1):
        fake.repo(PR_REPO).pulls[n] = Pull(n, head, base, "main", author=AUTHOR)
    server, api = fake.serve()
    env = serve_env(
        api_url=api, secret=SECRET, data_dir=tmp / "serve-data", private_key=private_key_pem()
    )
    port = free_port()
    samples: list[PrSample] = []
    try:
        proc = start_serve(env, port)
    except ServeFailed as exc:
        server.shutdown()
        raise Failed(f"PR side: {exc}") from exc
    try:
        opened = webhook_fixture("pull_request.opened")
        for n, head in enumerate(heads, start=1):
            payload = copy.deepcopy(opened)
            payload["number"] = n
            pr = payload["pull_request"]
            pr["number"] = n
            pr["head"]["sha"] = head
            pr["base"]["sha"] = base
            pr["base"]["ref"] = "main"
            pr["user"]["login"] = AUTHOR
            payload["repository"]["full_name"] = PR_REPO
            before = _processing_sum(port)
            mark = len(fake.timeline)
            sent = time.monotonic()
            answer = post_webhook(port, payload, f"e2e-{n}", secret=SECRET)
            acked = time.monotonic()
            if answer.status_code != 202:
                raise Failed(f"PR #{n}: /webhook answered {answer.status_code}: {answer.text}")
            if not wait_for(lambda h=head: len(fake.completed(h)) == 4, 60, every=0.002):
                raise Failed(f"PR #{n}: check runs after 60 s: {fake.completed(head)}")
            if not wait_for(lambda: healthz(port).get("inbox_depth") == 0, 30):
                raise Failed(f"PR #{n}: the inbox did not drain")
            conclusions = fake.completed(head)
            if conclusions != EXPECTED:
                raise Failed(f"PR #{n}: check runs {conclusions}, expected {EXPECTED}")
            samples.append(_pr_sample(fake.timeline[mark:], sent, acked, before, port))
        if fake.schema_errors:
            raise Failed(f"request bodies off the OpenAPI schema: {fake.schema_errors[:3]}")
    finally:
        stop_serve(proc)
        server.shutdown()
        server.server_close()
    return samples


def _pr_sample(
    timeline: list[tuple[float, float, str, str, int]],
    sent: float,
    acked: float,
    before: float,
    port: int,
) -> PrSample:
    writes = [c for c in timeline if "/check-runs" in c[3] and c[2] in ("POST", "PATCH")]
    first_write = writes[0][0]
    reads = [c for c in timeline if c[1] <= first_write and "/orgs/" not in c[3]]
    done = writes[-1][1]
    first = timeline[0][0]
    last_read = reads[-1][1] if reads else first
    phases = {
        "ack": acked - sent,
        "queue wait": first - acked,
        "read PR": last_read - first,
        "evaluate": first_write - last_read,
        "publish": done - first_write,
        "total": done - sent,
        "in the fake": sum(end - start for start, end, *_ in timeline),
    }
    return PrSample(
        phases=phases,
        processing=_processing_sum(port) - before,
        calls=Counter(operation(m, p) for _, _, m, p, _ in timeline),
    )


# -- merge side --------------------------------------------------------------------------------

MERGE_PHASES = (
    "start-up",
    "attestation + policy",
    "locks",
    "steps",
    "lock release",
    "audit push",
    "check run + comment",
    "exit",
    "total",
)


@dataclass
class MergeSample:
    phases: dict[str, float]
    calls: Counter[str]
    live_updates: int


def merge_side(tmp: Path, steps: int, n: int) -> MergeSample:
    log = tmp / f"merge-{n}.log"
    xw = ExecWorld(tmp / f"merge-{n}", plan_text(steps, log))
    try:
        remote = tmp / f"merge-{n}-remote"
        bare = remote / f"{EXEC_REPO}.git"
        bare.parent.mkdir(parents=True)
        subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
        env = xw.env(GITHUB_SERVER_URL=f"file://{remote}")
        wall_offset = time.time() - time.monotonic()
        t0 = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-c", CODE, *xw.argv("--push-audit")],
            cwd=xw.root,
            env=env,
            capture_output=True,
            text=True,
        )
        t_end = time.monotonic()
        where = f"merge run {n}"
        if proc.returncode != 0:
            raise Failed(
                f"{where}: plangate execute exited {proc.returncode}: {proc.stderr[-800:]}"
            )
        plans = json.loads(proc.stdout)["plans"]
        if [p["status"] for p in plans] != ["succeeded"]:
            raise Failed(f"{where}: plans {plans}")
        ran = log.read_text().split() if log.exists() else []
        if ran != [f"s{i}" for i in range(1, steps + 1)]:
            raise Failed(f"{where}: {len(ran)} step lines instead of each of {steps} once")
        runs = check_runs(xw.gh)
        done = final(runs[0]) if len(runs) == 1 else None
        if done is None or done.get("conclusion") != "success":
            raise Failed(
                f"{where}: plangate/execute check runs {runs and [final(r) for r in runs]}"
            )
        if xw.gh.schema_errors:
            raise Failed(
                f"{where}: request bodies off the OpenAPI schema: {xw.gh.schema_errors[:3]}"
            )
        pushed = subprocess.run(
            ["git", "--git-dir", str(bare), "for-each-ref", "--format=%(refname)"],
            capture_output=True,
            text=True,
        ).stdout.split()
        if not any(ref.endswith("plangate/audit") for ref in pushed):
            raise Failed(f"{where}: the audit ref was not pushed (remote has {pushed})")
        events = [json.loads(line) for line in (xw.data / "events.jsonl").read_text().splitlines()]
        return _merge_sample(xw.api.timeline, events, t0, t_end, wall_offset)
    finally:
        xw.close()


def _merge_sample(
    timeline: list[tuple[float, str, str, int]],
    events: list[dict[str, Any]],
    t0: float,
    t_end: float,
    wall_offset: float,
) -> MergeSample:
    at: dict[str, float] = {}
    for event in events:  # the first of each kind, on the benchmark's monotonic clock
        at.setdefault(event["type"], event["at"] - wall_offset)
    check_writes = [t for t, m, p, _ in timeline if re.search(r"/check-runs(/\d+)?$", p)]
    created = check_writes[0]
    finishing = [t for t in check_writes if t > at["lock.released"]]
    live = [t for t in check_writes if at["run.started"] <= t <= at["run.completed"]]
    finish_start = finishing[0] if finishing else t_end
    last_call = max(t for t, *_ in timeline)
    phases = {
        "start-up": created - t0,
        "attestation + policy": at["run.requested"] - created,
        "locks": at["run.started"] - at["run.requested"],
        "steps": at["run.completed"] - at["run.started"],
        "lock release": at["lock.released"] - at["run.completed"],
        "audit push": finish_start - at["lock.released"],
        "check run + comment": last_call - finish_start,
        "exit": t_end - last_call,
        "total": t_end - t0,
    }
    return MergeSample(
        phases=phases,
        calls=Counter(operation(m, p) for _, m, p, _ in timeline),
        live_updates=len(live),
    )


# -- baselines ---------------------------------------------------------------------------------


def baseline_check(tmp: Path, steps: int, n: int) -> tuple[float, float]:
    """``plangate check`` of the same plan against the shipped policies: (as a process, warm in
    this process). The warm one is the same command through ``app.cli.main`` once its modules
    are imported (the second call of two), i.e. the work without the interpreter's start-up."""
    import contextlib
    import io

    from app.cli import main as cli_main

    work = tmp / f"check-baseline-{n}"
    work.mkdir()
    shutil.copytree(ROOT / "policies", work / "policies")
    (work / "plans").mkdir()
    plan = work / "plans" / "e2e.yaml"
    plan.write_text(e2e_plan(steps, 1, work / "log"))
    argv = ["check", str(plan), "--policies", str(work / "policies"), "--format", "json"]
    code, out, seconds = run_cli(argv, work)
    if code != 0:
        raise Failed(f"baseline plangate check exited {code}: {out[-600:]}")
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        cli_main(argv)  # imports, caches
        t0 = time.monotonic()
        code = cli_main(argv)
        warm = time.monotonic() - t0
    if code != 0:
        raise Failed(
            f"baseline plangate check (in process) returned {code}: {sink.getvalue()[-600:]}"
        )
    return seconds, warm


def baseline_run(tmp: Path, steps: int, n: int) -> float:
    """``plangate run`` of the same plan in a local repository (key, attestation untimed)."""
    work = tmp / f"run-baseline-{n}"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    git(work, "config", "user.name", "Benchmark")
    git(work, "config", "user.email", "benchmark@example.com")
    shutil.copytree(ROOT / "policies", work / "policies")
    (work / "plans").mkdir()
    log = work / "steps.log"
    (work / "plans" / "e2e.yaml").write_text(plan_text(steps, log))
    (work / ".gitignore").write_text(".plangate/\ndata/\n")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "plan")
    code, out, _ = run_cli(["keygen"], work)
    # critical risk (100 shell steps): one approval plus two from different teams
    approvers = ["--approver", "alice", "--approver", "carol", "--approver", "bob"]
    code2, out2, _ = run_cli(["attest", "plans/e2e.yaml", *approvers], work)
    if code or code2:
        raise Failed(f"baseline set-up (keygen/attest) failed: {out[-300:]} {out2[-600:]}")
    code, out, seconds = run_cli(
        ["run", "plans/e2e.yaml", "--data-dir", str(work / "data"), "--format", "json"], work
    )
    ran = log.read_text().split() if log.exists() else []
    if code != 0 or len(ran) != steps:
        raise Failed(f"baseline plangate run exited {code} with {len(ran)} steps: {out[-600:]}")
    return seconds


# -- report ------------------------------------------------------------------------------------


@dataclass
class Results:
    steps: int
    repeat: int
    pr: list[PrSample] = field(default_factory=list)
    merge: list[MergeSample] = field(default_factory=list)
    check: list[float] = field(default_factory=list)
    check_warm: list[float] = field(default_factory=list)
    run: list[float] = field(default_factory=list)
    load: tuple[float, float] = (0.0, 0.0)


def _row(name: str, values: list[float]) -> str:
    return (
        f"  {name:<34} {statistics.median(values) * 1000:9.1f} {percentile(values, 90) * 1000:9.1f}"
    )


def _calls(counters: list[Counter[str]]) -> list[str]:
    ops = sorted({op for c in counters for op in c})
    out = []
    for op in ops:
        counts = sorted({c[op] for c in counters})
        shown = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
        out.append(f"    {op:<34} {shown}")
    total = sorted({sum(c.values()) for c in counters})
    out.append(f"    {'total':<34} {total[0] if len(total) == 1 else f'{total[0]}-{total[-1]}'}")
    return out


def report(r: Results) -> list[str]:
    lines = [
        f"e2e: a {r.steps}-step plan, {r.repeat} repetitions, fake GitHub on 127.0.0.1 "
        "(milliseconds: median, p90)",
        f"load average {r.load[0]:.1f} at the start, {r.load[1]:.1f} at the end "
        f"({os.cpu_count()} CPUs)",
        "",
        "PR side: signed pull_request.opened -> validate, policy, cost, approval completed",
        f"  {'phase':<34} {'median':>9} {'p90':>9}",
    ]
    for phase in PR_PHASES:
        lines.append(_row(phase, [s.phases[phase] for s in r.pr]))
    lines.append(_row("server processing (/metrics)", [s.processing for s in r.pr]))
    lines.append(_row("baseline: plangate check (process)", r.check))
    lines.append(_row("baseline: plangate check (warm)", r.check_warm))
    total = statistics.median(s.phases["total"] for s in r.pr)
    lines.append(
        f"  ratio total / plangate check: {total / statistics.median(r.check):.2f}x the process, "
        f"{total / statistics.median(r.check_warm):.2f}x warm"
    )
    cold = r.pr[0].phases["total"]
    warm = [s.phases["total"] for s in r.pr[1:]] or [cold]
    lines.append(
        f"  cold server (repetition 1) {cold * 1000:.1f} ms, warm median "
        f"{statistics.median(warm) * 1000:.1f} ms"
    )
    lines.append("  REST calls per delivery (by operation):")
    lines += _calls([s.calls for s in r.pr])
    lines += [
        "",
        "Merge side: plangate execute (subprocess) -> plangate/execute completed",
        f"  {'phase':<34} {'median':>9} {'p90':>9}",
    ]
    for phase in MERGE_PHASES:
        lines.append(_row(phase, [s.phases[phase] for s in r.merge]))
    per_step = [s.phases["steps"] / r.steps for s in r.merge]
    lines.append(_row("  per step", per_step))
    lines.append(_row("baseline: plangate run (process)", r.run))
    total = statistics.median(s.phases["total"] for s in r.merge)
    lines.append(f"  ratio total / plangate run: {total / statistics.median(r.run):.2f}x")
    updates = sorted({s.live_updates for s in r.merge})
    lines.append(f"  live plangate/execute updates while the steps ran: {updates}")
    lines.append("  REST calls per execute (by operation):")
    lines += _calls([s.calls for s in r.merge])
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="repetitions of each side")
    parser.add_argument("--steps", type=int, default=100, help="steps of the plan")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.steps < 1:
        parser.error("--repeat and --steps must be at least 1")
    results = Results(args.steps, args.repeat)
    started = time.monotonic()
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="plangate-e2e-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            results.pr = pr_side(tmp, args.steps, args.repeat)
            for n in range(1, args.repeat + 1):
                cold, warm = baseline_check(tmp, args.steps, n)
                results.check.append(cold)
                results.check_warm.append(warm)
                results.merge.append(merge_side(tmp, args.steps, n))
                results.run.append(baseline_run(tmp, args.steps, n))
        except Failed as exc:
            print(f"e2e: FAILED: {exc}", file=sys.stderr)
            return 1
    results.load = (load_start, os.getloadavg()[0])
    print("\n".join(report(results)))
    print(f"\n(benchmark wall time {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
