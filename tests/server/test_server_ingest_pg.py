"""The webhook ack path on PostgreSQL: the batch's transaction runs off the event loop.

``GroupCommitter`` runs ``PostgresInbox.add_many`` (inserts and COMMIT, each a round trip to the
server) on its commit thread: the loop keeps serving while the database is slow, a request is
answered only after its batch's COMMIT returned, duplicates are ``False`` within a batch and
across batches, and a COMMIT that fails fails every request of its batch and stores none of it.
Against the session's throwaway PostgreSQL cluster (tests/pgcluster.py).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

import psycopg
import pytest
from srvkit import webhook_fixture

from app.server.inbox_pg import _KEY_LOCKS, PostgresInbox
from app.server.ingest import GroupCommitter
from app.server.webhooks import Event, order_key


def _event(delivery: str, number: int = 7) -> tuple[Event, bytes]:
    payload = webhook_fixture("pull_request.opened")
    payload["pull_request"]["number"] = number
    return Event("pull_request", delivery, payload), json.dumps(payload).encode()


def _stored_elsewhere(url: str) -> set[str]:
    """Delivery ids another connection sees: committed ones only."""
    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute("SELECT id FROM plangate_deliveries").fetchall()}


@pytest.fixture
def inbox(pg_url):
    store = PostgresInbox(pg_url, heartbeat=False)
    yield store
    store.close()


def test_loop_keeps_running_while_the_batch_waits_on_the_database(pg_url, inbox):
    event, body = _event("held")
    key = order_key(event)[0]
    # another transaction holds the pull request's advisory lock: the batch's insert waits on it
    holder = psycopg.connect(pg_url)
    holder.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_KEY_LOCKS, key))
    ticks = [0]
    seen: dict[str, object] = {}

    def release_when_the_loop_ticked_while_waiting() -> None:
        with psycopg.connect(pg_url, autocommit=True) as watcher:
            for _ in range(1000):  # the batch reached the server and waits for the lock
                waiting = watcher.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype='advisory' AND NOT granted"
                ).fetchone()[0]
                if waiting:
                    break
                time.sleep(0.01)
            seen["waiting"] = bool(waiting)
            start = ticks[0]
            deadline = time.monotonic() + 5
            while ticks[0] < start + 10 and time.monotonic() < deadline:
                time.sleep(0.01)
            seen["ticks_while_waiting"] = ticks[0] - start
            seen["visible_while_waiting"] = "held" in _stored_elsewhere(pg_url)
        holder.rollback()  # the lock goes: the batch's insert and COMMIT proceed

    committer = GroupCommitter(inbox)

    async def main() -> bool:
        stored = asyncio.ensure_future(committer.add(event, body, now=1.0))
        releaser = threading.Thread(target=release_when_the_loop_ticked_while_waiting)
        releaser.start()
        while not stored.done():  # a concurrent coroutine: runs only while the loop is free
            ticks[0] += 1
            await asyncio.sleep(0.005)
        await asyncio.to_thread(releaser.join, 20)
        return await stored

    try:
        assert asyncio.run(main()) is True
    finally:
        committer.stop()
        holder.close()
    assert seen["waiting"] is True
    # with the batch written on the loop, the loop is blocked until the lock goes: 0 ticks
    assert seen["ticks_while_waiting"] >= 10
    assert seen["visible_while_waiting"] is False  # not acknowledged, not stored, until COMMIT
    assert _stored_elsewhere(pg_url) == {"held"}


def test_duplicates_within_a_batch_and_across_batches(pg_url, inbox):
    committer = GroupCommitter(inbox)

    async def main() -> tuple[list[bool], list[bool]]:
        first = await asyncio.gather(
            *(committer.add(*_event(d, n), now=1.0) for d, n in (("a", 1), ("a", 1), ("b", 2)))
        )
        second = await asyncio.gather(
            *(committer.add(*_event(d, n), now=2.0) for d, n in (("b", 2), ("c", 3), ("a", 1)))
        )
        return first, second

    first, second = asyncio.run(main())
    committer.stop()
    assert first == [True, False, True]  # one batch: the second "a" is a duplicate (200)
    assert second == [False, True, False]  # the next batch: "a" and "b" already stored
    assert committer.batches == 2
    assert _stored_elsewhere(pg_url) == {"a", "b", "c"}
    assert inbox.counts() == {"queued": 3}


def test_a_failing_commit_fails_every_request_of_its_batch_and_stores_none(pg_url, inbox):
    # a deferred constraint trigger: the inserts succeed, the COMMIT raises (as a server that
    # loses its disk or is shut down mid-commit would make it)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION refuse_bad() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.id = 'bad' THEN RAISE EXCEPTION 'refused at commit'; END IF; RETURN NULL; "
            "END $$"
        )
        conn.execute(
            "CREATE CONSTRAINT TRIGGER refuse_bad AFTER INSERT ON plangate_deliveries "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_bad()"
        )
    committer = GroupCommitter(inbox)

    async def main() -> tuple[list[object], bool]:
        doomed = await asyncio.gather(
            *(
                committer.add(*_event(d, n), now=1.0)
                for d, n in (("g1", 1), ("bad", 2), ("g2", 3), ("g1", 1))
            ),
            return_exceptions=True,
        )
        after = await committer.add(*_event("g3", 4), now=2.0)
        return doomed, after

    doomed, after = asyncio.run(main())
    committer.stop()
    assert len(doomed) == 4
    for outcome in doomed:  # the endpoint answers 5xx to each of them
        assert isinstance(outcome, psycopg.errors.RaiseException)
        assert "refused at commit" in str(outcome)
    assert after is True  # the next batch is stored: the inbox is still usable
    assert _stored_elsewhere(pg_url) == {"g3"}  # nothing of the failed batch
    assert inbox.get("g1") is None and inbox.get("bad") is None
