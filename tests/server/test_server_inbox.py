"""The durable inbox: dedupe, per-PR ordering, coalescing, group commit, recovery.

Every behavioural test runs against both backends (``open_store``: SQLite in ``tmp_path``, and
PostgreSQL in a fresh database of the session's throwaway cluster, see tests/pgcluster.py).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator

import pytest
from srvkit import webhook_fixture

from app.server.inbox import Inbox, InboxStore
from app.server.webhooks import Event


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(request, tmp_path) -> Iterator[Callable[[], InboxStore]]:
    """Opens the inbox (again, for restart tests) on one shared location of the backend."""
    opened: list[InboxStore] = []
    if request.param == "sqlite":

        def factory() -> InboxStore:
            opened.append(Inbox.in_dir(tmp_path))
            return opened[-1]
    else:
        from app.server.inbox_pg import PostgresInbox

        url = request.getfixturevalue("pg_url")

        def factory() -> InboxStore:
            opened.append(PostgresInbox(url, heartbeat=False))
            return opened[-1]

    yield factory
    for store in opened:
        with contextlib.suppress(Exception):  # already closed by the test
            store.close()


def _event(delivery: str, *, number: int = 2, sha: str = "a" * 40, name="pull_request") -> Event:
    payload = webhook_fixture("pull_request.synchronize")
    payload["pull_request"]["number"] = number
    payload["pull_request"]["head"]["sha"] = sha
    return Event(name, delivery, payload)


def _add(inbox: InboxStore, event: Event, now: float = 1.0) -> bool:
    return inbox.add(event, json.dumps(dict(event.payload)).encode(), now=now)


def test_same_delivery_id_stored_once(open_store):
    inbox = open_store()
    assert _add(inbox, _event("x")) is True
    assert _add(inbox, _event("x")) is False
    assert inbox.counts() == {"queued": 1}


def test_per_pull_request_order(open_store):
    inbox = open_store()
    _add(inbox, _event("a1", number=1, sha="1" * 40))
    _add(inbox, _event("b1", number=2, sha="2" * 40))
    review = Event("pull_request_review", "a2", webhook_fixture("pull_request_review.submitted"))
    review.payload["pull_request"]["number"] = 1  # type: ignore[index]
    _add(inbox, review)
    first = inbox.claim(now=10)
    second = inbox.claim(now=10)
    assert (first.id, second.id) == ("a1", "b1")
    assert inbox.claim(now=10) is None  # a2 waits for a1 (same pull request)
    inbox.complete("a1", now=11)
    assert inbox.claim(now=11).id == "a2"


def test_failed_delivery_blocks_its_pr_until_retried(open_store):
    inbox = open_store()
    _add(inbox, _event("a1", sha="1" * 40))
    review = Event("pull_request_review", "a2", webhook_fixture("pull_request_review.submitted"))
    _add(inbox, review)
    inbox.claim(now=0)
    inbox.fail("a1", "boom", retry_at=100, now=0)
    assert inbox.claim(now=50) is None  # not before the retry, and a2 keeps its place
    assert inbox.claim(now=100).id == "a1"


def test_newer_head_supersedes_queued_older_head(open_store):
    inbox = open_store()
    _add(inbox, _event("old", sha="1" * 40))
    _add(inbox, _event("other-pr", number=3, sha="1" * 40))
    _add(inbox, _event("new", sha="2" * 40))
    assert inbox.get("old").status == "superseded"
    assert inbox.get("other-pr").status == "queued"
    assert inbox.get("new").status == "queued"


def test_review_never_supersedes(open_store):
    inbox = open_store()
    _add(inbox, _event("sync", sha="2" * 40))
    review = Event("pull_request_review", "late", webhook_fixture("pull_request_review.submitted"))
    _add(inbox, review)  # a late review for an older head
    assert inbox.get("sync").status == "queued"


def test_processing_delivery_is_not_superseded(open_store):
    inbox = open_store()
    _add(inbox, _event("old", sha="1" * 40))
    inbox.claim(now=5)
    _add(inbox, _event("new", sha="2" * 40))
    assert inbox.get("old").status == "processing"


def test_concurrent_adds_each_stored_once(open_store):
    inbox = open_store()
    results: dict[str, list[bool]] = {}
    lock = threading.Lock()

    def worker(i: int) -> None:
        delivery = f"d{i % 25}"  # every id sent by two threads
        stored = _add(inbox, _event(delivery, number=i % 25, sha=f"{i % 25:040x}"))
        with lock:
            results.setdefault(delivery, []).append(stored)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(sorted(v) == [False, True] for v in results.values())
    assert inbox.counts() == {"queued": 25}


def test_stored_delivery_survives_reopen(open_store):
    inbox = open_store()
    _add(inbox, _event("x"))
    inbox.claim(now=1)
    inbox.close()
    again = open_store()
    assert again.get("x").status == "processing"
    assert again.resume() == 1
    assert again.claim(now=2).to_event().delivery_id == "x"


def test_wal_mode_sqlite(tmp_path):
    inbox = Inbox.in_dir(tmp_path)
    import sqlite3

    db = sqlite3.connect(inbox.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_group_committer_stores_each_once_and_answers_each_request(open_store):
    import asyncio

    from app.server.ingest import GroupCommitter

    inbox = open_store()
    calls: list[int] = []
    # SQLite stages the inserts and commits off the loop; other stores write in one call
    name = "add_many_staged" if hasattr(inbox, "add_many_staged") else "add_many"
    original = getattr(inbox, name)

    def spy(items):
        calls.append(len(items))
        return original(items)

    setattr(inbox, name, spy)
    committer = GroupCommitter(inbox)

    async def main() -> list[bool]:
        events = [_event(f"d{i % 40}", number=i % 40, sha=f"{i % 40:040x}") for i in range(80)]
        return await asyncio.gather(*(committer.add(e, b"{}", now=1.0) for e in events))

    results = asyncio.run(main())
    committer.stop()
    assert results.count(True) == 40 and results.count(False) == 40
    assert sum(calls) == 80  # every delivery went through a (shared) transaction
    assert inbox.counts() == {"queued": 40}


def test_claim_once_per_interval_shared_by_instances(open_store):
    # the keyless approval re-dispatch limit: claimed in the store every replica shares
    a, b = open_store(), open_store()
    assert a.claim_once("k", now=1000.0, every=600) is True
    assert b.claim_once("k", now=1001.0, every=600) is False  # the other instance sees it
    assert a.claim_once("other", now=1001.0, every=600) is True
    assert b.claim_once("k", now=1600.0, every=600) is True  # the window has passed
    assert a.claim_once("k", now=1700.0, every=600) is False
    b.release_claim("k", at=1000.0)  # an old claim's release does not undo the newer one
    assert a.claim_once("k", now=1700.0, every=600) is False
    b.release_claim("k", at=1600.0)  # the dispatch it guarded failed: claim again at once
    assert a.claim_once("k", now=1700.0, every=600) is True


def test_concurrent_claims_from_two_instances_one_wins(open_store):
    stores = [open_store(), open_store()]

    def claim(store: InboxStore, key: str, barrier: threading.Barrier, won: list[bool]) -> None:
        barrier.wait()
        won.append(store.claim_once(key, now=5.0, every=600))

    for round_ in range(20):
        barrier, won = threading.Barrier(4), []
        threads = [
            threading.Thread(target=claim, args=(s, f"r{round_}", barrier, won)) for s in stores * 2
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert sorted(won) == [False, False, False, True]
