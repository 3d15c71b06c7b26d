"""Group commit with the commit (the fsync) off the event loop: ``app.server.ingest``.

A delivery is acknowledged only after its batch's COMMIT returned; the loop keeps taking
deliveries while a commit is in flight, and they form the next batch; a failed commit fails
every request of its batch and leaves the inbox usable.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading

import pytest
from srvkit import webhook_fixture

from app.server.inbox import Inbox
from app.server.ingest import GroupCommitter
from app.server.webhooks import Event


def _event(delivery: str, number: int) -> tuple[Event, bytes]:
    payload = webhook_fixture("pull_request.opened")
    payload["pull_request"]["number"] = number
    return Event("pull_request", delivery, payload), json.dumps(payload).encode()


def _stored_elsewhere(inbox: Inbox) -> int:
    """Deliveries a second connection sees: committed ones only."""
    with sqlite3.connect(inbox.path) as db:
        return int(db.execute("SELECT count(*) FROM deliveries").fetchone()[0])


class GatedCommits:
    """Wraps ``add_many_staged``: each commit waits for ``release`` (set from the test)."""

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox
        self.release = threading.Event()
        self.committing = threading.Event()
        self.batches: list[int] = []
        self.fail_next = False
        original = inbox.add_many_staged

        def staged(items):
            self.batches.append(len(items))
            results, commit = original(items)
            fail, self.fail_next = self.fail_next, False

            def gated() -> None:
                self.committing.set()
                self.release.wait(10)
                if fail:
                    # what a full disk looks like: the COMMIT raises; the inbox rolls back
                    inbox._db.execute("ROLLBACK")
                    inbox._lock.release()
                    raise sqlite3.OperationalError("database or disk is full")
                commit()

            return results, gated

        inbox.add_many_staged = staged  # type: ignore[method-assign]


async def _until(condition, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.005)):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached")


def test_ack_waits_for_the_commit_and_the_loop_keeps_taking_deliveries(tmp_path):
    inbox = Inbox.in_dir(tmp_path)
    gate = GatedCommits(inbox)
    committer = GroupCommitter(inbox)

    async def main() -> None:
        first = [asyncio.ensure_future(committer.add(*_event(f"a{i}", i), now=1.0)) for i in (1, 2)]
        await _until(gate.committing.is_set)
        # the commit (fsync) is in flight: nothing is acknowledged nor visible yet ...
        await asyncio.sleep(0.05)
        assert not any(f.done() for f in first)
        assert _stored_elsewhere(inbox) == 0
        # ... and the loop is free: more deliveries arrive and wait for the next batch
        later = [
            asyncio.ensure_future(committer.add(*_event(f"b{i}", i), now=1.0)) for i in (3, 4, 5)
        ]
        await asyncio.sleep(0.05)
        assert gate.batches == [2]
        gate.release.set()
        assert await asyncio.gather(*first) == [True, True]
        assert await asyncio.gather(*later) == [True, True, True]

    asyncio.run(main())
    committer.stop()
    assert gate.batches == [2, 3]  # one transaction per batch, in arrival order
    assert _stored_elsewhere(inbox) == 5
    assert inbox.counts() == {"queued": 5}


def test_failed_commit_fails_its_batch_and_the_next_batch_is_stored(tmp_path):
    inbox = Inbox.in_dir(tmp_path)
    gate = GatedCommits(inbox)
    gate.fail_next = True
    committer = GroupCommitter(inbox)

    async def main() -> None:
        doomed = [
            asyncio.ensure_future(committer.add(*_event(f"a{i}", i), now=1.0)) for i in (1, 2)
        ]
        await _until(gate.committing.is_set)
        after = asyncio.ensure_future(committer.add(*_event("b", 9), now=1.0))
        gate.release.set()
        for future in doomed:
            with pytest.raises(sqlite3.OperationalError, match="disk is full"):
                await future
        assert await after is True

    asyncio.run(main())
    committer.stop()
    assert _stored_elsewhere(inbox) == 1  # nothing of the failed batch, the next one durable
    assert inbox.get("a1") is None and inbox.get("b") is not None


def test_staged_add_is_invisible_until_commit_and_holds_the_inbox(tmp_path):
    inbox = Inbox.in_dir(tmp_path)
    event, body = _event("x", 1)
    results, commit = inbox.add_many_staged([(event, body, 1.0), (event, body, 1.0)])
    assert results == [True, False]  # a duplicate within the batch
    assert _stored_elsewhere(inbox) == 0
    other = threading.Thread(target=inbox.counts)  # waits for the inbox lock
    other.start()
    other.join(0.1)
    assert other.is_alive()
    threading.Thread(target=commit).start()  # committed from another thread, as the server does
    other.join(5)
    assert not other.is_alive()
    assert _stored_elsewhere(inbox) == 1


def test_committer_without_staging_writes_on_the_commit_thread(tmp_path):
    # PostgreSQL's inbox has no add_many_staged: one add_many per batch, off the event loop
    # (tests/server/test_server_ingest_pg.py: against the real server)
    inbox = Inbox.in_dir(tmp_path)

    class Plain:
        def __init__(self) -> None:
            self.calls: list[int] = []
            self.threads: list[str] = []

        def add_many(self, items):
            self.calls.append(len(items))
            self.threads.append(threading.current_thread().name)
            return inbox.add_many(items)

    plain = Plain()
    committer = GroupCommitter(plain)  # type: ignore[arg-type]

    async def main() -> list[bool]:
        return await asyncio.gather(
            *(committer.add(*_event(f"d{i}", i), now=1.0) for i in range(5))
        )

    assert asyncio.run(main()) == [True] * 5
    committer.stop()
    assert plain.calls == [5]
    assert plain.threads[0].startswith("plangate-inbox-commit")
    assert _stored_elsewhere(inbox) == 5
