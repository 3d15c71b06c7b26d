"""Group commit for the webhook endpoint: many concurrent deliveries, one transaction, one fsync.

A 202 must mean "stored durably", and with ``synchronous=FULL`` every commit is an fsync. The
first delivery of an event-loop iteration schedules a flush (``call_soon``); every delivery
parsed before the flush runs joins the same transaction. The flush runs on the loop itself:
a short, bounded block (one SQLite transaction, typically about a millisecond) is cheaper than
handing each delivery to a thread and competing for the GIL, and no request waits for another
request's fsync one by one.
"""

from __future__ import annotations

import asyncio

from app.server.inbox import InboxStore
from app.server.webhooks import Event

__all__ = ["GroupCommitter"]


class GroupCommitter:
    def __init__(self, inbox: InboxStore) -> None:
        self.inbox = inbox
        self._batch: list[tuple[Event, bytes, float, asyncio.Future[bool]]] = []
        self.batches = 0

    async def add(self, event: Event, body: bytes, *, now: float) -> bool:
        """Store one delivery durably; resolves once its transaction has committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        if not self._batch:
            loop.call_soon(self._flush)
        self._batch.append((event, body, now, future))
        return await future

    def _flush(self) -> None:
        batch, self._batch = self._batch, []
        if not batch:
            return
        self.batches += 1
        try:
            results = self.inbox.add_many([(e, b, n) for e, b, n, _ in batch])
        except Exception as exc:  # the disk failed: every request of the batch gets a 5xx
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (*_, future), stored in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(stored)

    def stop(self) -> None:
        """Nothing to stop: flushes run on the event loop."""
