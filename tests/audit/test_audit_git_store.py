"""GitAuditStore: layout, batching, crash safety, concurrent writers, push with re-chaining."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import git
import pytest
from audit_support import draft

from app.audit.errors import AuditError
from app.audit.events import ChainHead
from app.audit.git_store import DEFAULT_REF, GitAuditStore


def _count_commits(store: GitAuditStore) -> int:
    return len(store.commit_chain())


def test_layout_segments_by_month_and_never_touches_worktree(git_repo, make_draft):
    repo = git.Repo(git_repo)
    (git_repo / "README").write_text("hello\n")
    repo.index.add(["README"])
    repo.index.commit("user work")
    store = GitAuditStore(git_repo, batch_size=1000)
    from datetime import UTC, datetime

    store.append([make_draft(0, timestamp=datetime(2026, 10, 31, 23, 59, tzinfo=UTC))])
    store.append([make_draft(1, timestamp=datetime(2026, 11, 1, 0, 1, tzinfo=UTC))])
    sha = store.commit("run phase: started")
    assert sha == store.tip()
    paths = [s.path for s in store.segments()]
    assert paths == [
        "events/2026-10/000000000001-000000000001.jsonl",
        "events/2026-11/000000000002-000000000002.jsonl",
    ]
    # the user's branch, index and working tree are untouched
    assert repo.head.ref.name in ("master", "main")
    assert repo.head.commit.message == "user work"
    assert not repo.is_dirty(untracked_files=True)
    assert DEFAULT_REF in [r.path for r in repo.refs]
    message = repo.commit(sha).message
    assert message.startswith("audit: 2 events, seq 1-2")
    assert "run phase: started" in message
    assert "Plangate-Audit-Last-Seq: 2" in message


def test_commits_are_batched_not_per_event(git_store, make_draft):
    for i in range(60):
        git_store.append([make_draft(i)])
    # batch_size=25: two automatic commits, 10 events still pending in the journal
    assert _count_commits(git_store) == 2
    assert git_store.pending == 10
    git_store.commit()
    assert _count_commits(git_store) == 3
    assert git_store.pending == 0
    assert git_store.verify().ok


def test_not_a_repository_is_a_clear_error(tmp_path):
    with pytest.raises(AuditError, match="not a git repository"):
        GitAuditStore(tmp_path / "nowhere")


def test_create_initialises_a_bare_repository(tmp_path, make_draft):
    store = GitAuditStore(tmp_path / "audit.git", create=True)
    store.append([make_draft(0)])
    store.commit()
    assert git.Repo(tmp_path / "audit.git").bare
    assert store.verify().ok


def test_acknowledged_events_survive_a_crash_before_commit(git_repo, make_draft):
    """A crash between write and commit loses no acknowledged event."""
    ctx = multiprocessing.get_context("fork")

    def child() -> None:
        store = GitAuditStore(git_repo, batch_size=1000)
        store.append([draft(i) for i in range(5)])
        os._exit(0)  # die without commit, close or cleanup

    proc = ctx.Process(target=child)
    proc.start()
    proc.join()
    assert proc.exitcode == 0
    store = GitAuditStore(git_repo)
    assert store.tip() is None
    assert store.head().seq == 5  # acknowledged, still in the journal
    store.append([make_draft(5)])
    store.commit()
    assert [e.seq for e in store.events()] == [1, 2, 3, 4, 5, 6]
    assert store.verify().ok


def test_crash_after_ref_update_before_journal_truncation(git_store, make_draft, monkeypatch):
    git_store.append([make_draft(i) for i in range(3)])

    def crash() -> None:
        raise SystemExit("power cut")

    monkeypatch.setattr(git_store, "_clear_journal", crash)
    with pytest.raises(SystemExit):
        git_store.commit()
    monkeypatch.undo()
    # the journal still holds events 1..3 that git already has: not duplicated, not lost
    fresh = GitAuditStore(git_store._repo.working_dir, batch_size=25)
    assert fresh.head().seq == 3
    fresh.append([make_draft(3)])
    fresh.commit()
    assert [e.seq for e in fresh.events()] == [1, 2, 3, 4]
    assert fresh.verify().ok


def test_torn_journal_line_was_never_acknowledged(git_store, make_draft):
    git_store.append([make_draft(0)])
    with open(git_store.state_dir / "journal.jsonl", "ab") as fh:
        fh.write(b'{"type":"run.started","seq":2,"hash"')  # crash mid-write
    other = GitAuditStore(git_store._repo.working_dir)
    assert other.head().seq == 1
    other.append([make_draft(1)])
    other.commit()
    assert [e.seq for e in other.events()] == [1, 2]
    assert other.verify().ok


def _writer(repo: str, name: str, n: int) -> None:
    store = GitAuditStore(repo, batch_size=7)
    for i in range(n):
        store.append([draft(i, correlation_id=name, payload={"writer": name, "i": i})])
        if i % 11 == 0:
            store.commit()
    store.commit()
    store.close()


def test_two_processes_writing_concurrently_lose_no_event(git_repo):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(git_repo), f"w{k}", 60)) for k in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    store = GitAuditStore(git_repo)
    events = list(store.events())
    assert [e.seq for e in events] == list(range(1, 121))
    for name in ("w0", "w1"):
        mine = [e.payload["i"] for e in events if e.correlation_id == name]
        assert mine == list(range(60))  # each writer's events, all there, in its order
    result = store.verify()
    assert result.ok, result.first_break
    assert store.pending == 0


def test_ref_moved_by_someone_else_never_loses_journal_events(git_store, make_draft):
    git_store.append([make_draft(i) for i in range(3)])
    git_store.commit()
    git_store.append([make_draft(3)])  # pending, seq 4
    # someone else commits seq 4..5 to the ref behind our back (another clone, via fetch)
    other = GitAuditStore(git_store._repo.working_dir, state_dir=git_store.state_dir.parent / "x")
    other.append([make_draft(10), make_draft(11)])
    other.commit()
    git_store.commit()
    events = list(git_store.events())
    assert [e.seq for e in events] == [1, 2, 3, 4, 5, 6]
    assert events[-1].payload["i"] == 3  # our acknowledged event, re-chained after theirs
    assert git_store.verify().ok


def test_read_events_are_the_written_lines(git_store, make_draft):
    written = git_store.append([make_draft(i) for i in range(3)])
    git_store.commit()
    seg = git_store.segments()[0]
    lines = git_store._read_blob(seg.blob).decode().splitlines()
    assert [json.loads(line)["hash"] for line in lines] == [e.hash for e in written]
    assert lines[0] == written[0].to_json_line()


# -- push to a remote (Actions) ---------------------------------------------------------------


@pytest.fixture
def remote_and_clones(tmp_path: Path):
    bare = tmp_path / "remote.git"
    git.Repo.init(bare, bare=True)
    clones = []
    for name in ("a", "b"):
        path = tmp_path / name
        repo = git.Repo.init(path)
        repo.create_remote("origin", str(bare))
        clones.append(path)
    return bare, clones


def test_push_fast_forward(remote_and_clones, make_draft):
    bare, (a, _) = remote_and_clones
    store = GitAuditStore(a)
    store.append([make_draft(i) for i in range(4)])
    tip = store.push("origin", sleep=lambda _: None)
    assert git.Repo(bare).commit(DEFAULT_REF).hexsha == tip
    assert store.pending == 0


def test_push_rechains_after_non_fast_forward(remote_and_clones, make_draft):
    bare, (a, b) = remote_and_clones
    sa, sb = GitAuditStore(a), GitAuditStore(b)
    sa.append([make_draft(i, correlation_id="from-a") for i in range(3)])
    sa.push("origin", sleep=lambda _: None)
    sb.append([make_draft(i, correlation_id="from-b") for i in range(2)])
    sleeps: list[float] = []
    sb.push("origin", sleep=sleeps.append)
    assert len(sleeps) == 1  # one rejection, one retry
    remote = GitAuditStore(bare)
    events = list(remote.events())
    assert [e.correlation_id for e in events] == ["from-a"] * 3 + ["from-b"] * 2
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert remote.verify().ok
    # a's published commit is still an ancestor: history was only appended to
    assert remote.is_ancestor(sa.tip(), remote.tip())
    assert sb.verify().ok


def test_push_rechain_keeps_verify_anchor_valid(remote_and_clones, make_draft):
    _, (a, b) = remote_and_clones
    sa, sb = GitAuditStore(a), GitAuditStore(b)
    sa.append([make_draft(0)])
    sa.push("origin", sleep=lambda _: None)
    sb.append([make_draft(1)])
    sb.commit()
    assert sb.verify().ok  # anchors b's local-only commit
    sb.push("origin", sleep=lambda _: None)  # that commit is replaced by a re-chained one
    result = sb.verify()
    assert result.ok, result.first_break
    assert [e.seq for e in sb.events()] == [1, 2]


def test_push_gives_up_with_a_clear_error(tmp_path, make_draft):
    store = GitAuditStore(tmp_path / "r", create=True)
    store.append([make_draft(0)])
    with pytest.raises(AuditError, match=r"could not push .* after 2 attempts"):
        store.push("does-not-exist", attempts=2, sleep=lambda _: None)
    assert store.head() == ChainHead(1, store.head().hash)


def test_queries_from_several_threads(git_store, make_draft):
    """The dashboard queries from the server's thread pool."""
    from concurrent.futures import ThreadPoolExecutor

    from app.audit.query import AuditQuery

    git_store.append([make_draft(i) for i in range(40)])
    git_store.commit()
    expected = [e.seq for e in git_store.events() if e.plan_id == "plan-2"]

    def ask(_: int) -> list[int]:
        return [e.seq for e in git_store.query(AuditQuery(plan_id="plan-2"))]

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(ask, range(12)))
    assert all(r == expected for r in results)


def _appender_until_killed(repo: str, acks: str) -> None:
    store = GitAuditStore(repo, batch_size=13)  # commits often: kills land mid-commit too
    i = 0
    with open(acks, "a", buffering=1) as out:
        while True:
            events = store.append([draft(i, payload={"i": i}), draft(i + 1, payload={"i": i + 1})])
            out.write(" ".join(e.hash for e in events) + "\n")  # only after append returned
            i += 2


def test_sigkill_at_any_moment_loses_no_acknowledged_event(git_repo, tmp_path):
    import signal
    import time

    acks = tmp_path / "acks.txt"
    acks.touch()
    ctx = multiprocessing.get_context("fork")
    for round_ in range(3):
        proc = ctx.Process(target=_appender_until_killed, args=(str(git_repo), str(acks)))
        proc.start()
        target = 40 * (round_ + 1)
        while len(acks.read_text().split()) < target:  # wait for progress, not for time
            assert proc.is_alive(), f"the appender died on its own (exit {proc.exitcode})"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
    acknowledged = acks.read_text().split()
    store = GitAuditStore(git_repo)
    store.commit()
    stored = {e.hash for e in store.events()}
    assert set(acknowledged) <= stored
    result = store.verify()
    assert result.ok, result.first_break
