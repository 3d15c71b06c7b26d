"""Group commit for the webhook endpoint: many concurrent deliveries, one transaction, one fsync.

A 202 must mean "stored durably", and with ``synchronous=FULL`` every commit is an fsync
(milliseconds). One writer thread takes everything queued since its last commit and stores it in
a single transaction, then resolves each request's future on the event loop. Requests never
block the loop and never wait for each other's fsyncs one by one.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from dataclasses import dataclass

from app.server.inbox import Inbox
from app.server.webhooks import Event

__all__ = ["GroupCommitter"]

#: most deliveries stored in one transaction
MAX_BATCH = 256


@dataclass(frozen=True, slots=True)
class _Item:
    event: Event
    body: bytes
    now: float
    future: asyncio.Future[bool]
    loop: asyncio.AbstractEventLoop


class GroupCommitter:
    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    async def add(self, event: Event, body: bytes, *, now: float) -> bool:
        """Store one delivery durably; resolves once its transaction has committed."""
        self._ensure_started()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        self._queue.put(_Item(event, body, now, future, loop))
        return await future

    def _ensure_started(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="plangate-inbox-writer", daemon=True
                )
                self._thread.start()

    def stop(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(10)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(item)
            try:
                results = self.inbox.add_many([(i.event, i.body, i.now) for i in batch])
            except BaseException as exc:  # the disk failed: every request in the batch gets 5xx
                for item in batch:
                    item.loop.call_soon_threadsafe(_fail, item.future, exc)
            else:
                for item, stored in zip(batch, results, strict=True):
                    item.loop.call_soon_threadsafe(_resolve, item.future, stored)


def _resolve(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future[bool], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
