"""Group commit for the webhook endpoint: many concurrent deliveries, one transaction, one fsync.

A 202 must mean "stored durably", and with ``synchronous=FULL`` every commit is an fsync. The
first delivery of an event-loop iteration schedules a flush (``call_soon``); every delivery
parsed before the flush runs joins the same transaction.

The inserts run on the loop (a short, bounded block: no thread competes for the GIL at every
statement); the commit, which is the fsync, runs on one commit thread, so the loop keeps reading,
verifying and parsing the next deliveries meanwhile (they form the next batch, flushed as soon as
the commit is done: one batch in flight at a time, in arrival order). A request is answered only
after its batch's commit returned. Stores without ``add_many_staged`` (PostgreSQL, where every
insert is a network round trip and the commit waits for the server's) run their whole
``add_many`` on the commit thread instead: same batching, same one batch in flight, same ack
after the COMMIT returned, and the loop never waits for the database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Protocol

from app.server.inbox import InboxStore
from app.server.webhooks import Event

__all__ = ["GroupCommitter"]

_Item = tuple[Event, bytes, float, "asyncio.Future[bool]"]


class _Staged(Protocol):
    def __call__(
        self, items: list[tuple[Event, bytes, float]]
    ) -> tuple[list[bool], Callable[[], None]]: ...


class GroupCommitter:
    def __init__(self, inbox: InboxStore) -> None:
        self.inbox = inbox
        self._staged: _Staged | None = getattr(inbox, "add_many_staged", None)
        self._batch: list[_Item] = []
        self._committing = False
        self._commits: ThreadPoolExecutor | None = None
        self.batches = 0

    async def add(self, event: Event, body: bytes, *, now: float) -> bool:
        """Store one delivery durably; resolves once its transaction has committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        if not self._batch and not self._committing:
            loop.call_soon(self._flush)
        self._batch.append((event, body, now, future))
        return await future

    def _flush(self) -> None:
        if self._committing:  # the commit in flight flushes what gathered meanwhile
            return
        batch, self._batch = self._batch, []
        if not batch:
            return
        self.batches += 1
        items = [(e, b, n) for e, b, n, _ in batch]
        write: Callable[[], list[bool]]
        if self._staged is None:  # the whole transaction on the commit thread
            write = partial(self.inbox.add_many, items)
        else:
            try:
                results, commit = self._staged(items)
            except Exception as exc:  # the disk failed: every request of the batch gets a 5xx
                _resolve(batch, None, exc)
                return
            write = partial(_committed_then, commit, results)
        if self._commits is None:
            self._commits = ThreadPoolExecutor(1, thread_name_prefix="plangate-inbox-commit")
        self._committing = True
        done = asyncio.get_running_loop().run_in_executor(self._commits, write)
        done.add_done_callback(lambda f: self._committed(batch, f))

    def _committed(self, batch: list[_Item], done: asyncio.Future[list[bool]]) -> None:
        self._committing = False
        error = done.exception()
        _resolve(batch, None if error else done.result(), error)
        if self._batch:
            self._flush()

    def stop(self) -> None:
        """Wait for a commit in flight (it holds the inbox until it is done)."""
        if self._commits is not None:
            self._commits.shutdown(wait=True)
            self._commits = None


def _committed_then(commit: Callable[[], None], results: list[bool]) -> list[bool]:
    commit()
    return results


def _resolve(batch: list[_Item], results: list[bool] | None, error: BaseException | None) -> None:
    for index, (*_, future) in enumerate(batch):
        if future.done():  # the client went away
            continue
        if error is not None or results is None:
            future.set_exception(error or RuntimeError("inbox write failed"))
        else:
            future.set_result(results[index])
