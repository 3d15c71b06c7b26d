"""Background processing of the inbox: retries with backoff and jitter, dead letters, restarts.

The worker claims one delivery at a time per thread (the inbox keeps per-pull-request order),
dispatches it through the router, and records the outcome durably:

- success -> ``done``;
- ``RateLimited`` -> queued again at ``now + retry_after`` (GitHub said when);
- transient failure (``GitHubUnavailable``, other exceptions) -> queued again after exponential
  backoff with jitter; after ``max_attempts`` -> ``dead`` (``plangate deliveries retry ID``);
- a delivery that can never succeed (unreadable body, a 4xx other than a rate limit) -> ``dead``
  at once.

On ``start`` it first resumes deliveries a killed process left ``processing``. The durable
schedule is computed here (not a tenacity loop: the "loop" spans process restarts); ``rng`` and
``clock`` are injected so tests are exact.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field

from app.errors import GitHubError, GitHubUnavailable, RateLimited
from app.observability import metrics
from app.server.inbox import Delivery, InboxStore
from app.server.webhooks import Event, MalformedDelivery

__all__ = ["Worker", "WorkerPolicy"]

log = logging.getLogger(__name__)


class WorkerPolicy(BaseModel):
    """How deliveries are retried."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_attempts: int = Field(5, ge=1, description="attempts before a delivery is dead-lettered")
    initial_delay: float = Field(2.0, ge=0, description="seconds before the first retry")
    max_delay: float = Field(300.0, ge=0, description="cap of the exponential backoff")
    poll_interval: float = Field(1.0, gt=0, description="idle poll (the CLI may queue retries)")
    threads: int = Field(2, ge=1, description="deliveries processed at once (distinct PRs)")


class Worker:
    def __init__(
        self,
        *,
        inbox: InboxStore,
        dispatch: Callable[[Event], object],
        policy: WorkerPolicy | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.inbox = inbox
        self._dispatch = dispatch
        self.policy = policy or WorkerPolicy()
        self._clock = clock
        self._rng = rng or random.Random()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        #: last time a worker thread went round its loop (liveness for /healthz)
        self.last_beat: float | None = None

    # -- one step ------------------------------------------------------------------------------

    def process_one(self) -> Delivery | None:
        """Claim and process one ready delivery; returns it, or None if nothing was ready."""
        delivery = self.inbox.claim(now=self._clock())
        if delivery is None:
            return None
        try:
            self._dispatch(delivery.to_event())
        except MalformedDelivery as exc:
            self._give_up(delivery, f"unreadable delivery: {exc}")
        except RateLimited as exc:
            self._retry_later(delivery, exc, delay=exc.retry_after)
        except GitHubUnavailable as exc:
            self._retry_later(delivery, exc, delay=self.backoff(delivery.attempts))
        except GitHubError as exc:
            if exc.status is not None and 400 <= exc.status < 500:
                self._give_up(delivery, f"{type(exc).__name__}: {exc.message}")
            else:
                self._retry_later(delivery, exc, delay=self.backoff(delivery.attempts))
        except Exception as exc:  # a bug or an unexpected failure: retried, then dead-lettered
            log.exception("delivery %s (%s) failed", delivery.id, delivery.event)
            self._retry_later(delivery, exc, delay=self.backoff(delivery.attempts))
        else:
            now = self._clock()
            self.inbox.complete(delivery.id, now=now)
            metrics.DELIVERIES_PROCESSED.labels(event=delivery.event).inc()
            metrics.DELIVERY_PROCESSING_SECONDS.labels(event=delivery.event).observe(
                max(0.0, now - delivery.received_at)
            )
        return delivery

    def drain(self, *, limit: int = 10_000) -> int:
        """Process ready deliveries until none is ready (tests, ``deliveries retry --now``)."""
        n = 0
        while n < limit and self.process_one() is not None:
            n += 1
        return n

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter: uniform in [cap/2, cap], cap = initial * 2^(n-1)."""
        cap = min(self.policy.max_delay, self.policy.initial_delay * 2 ** max(0, attempt - 1))
        return self._rng.uniform(cap / 2, cap)

    def _retry_later(self, delivery: Delivery, exc: BaseException, *, delay: float) -> None:
        message = f"attempt {delivery.attempts}: {type(exc).__name__}: {exc}"
        now = self._clock()
        metrics.DELIVERIES_FAILED.labels(event=delivery.event).inc()
        if delivery.attempts >= self.policy.max_attempts:
            log.error("delivery %s dead after %d attempts: %s", delivery.id, delivery.attempts, exc)
            self.inbox.fail(delivery.id, message, retry_at=None, now=now)
            metrics.DELIVERIES_DEAD_LETTERED.labels(event=delivery.event).inc()
        else:
            self.inbox.fail(delivery.id, message, retry_at=now + delay, now=now)

    def _give_up(self, delivery: Delivery, message: str) -> None:
        log.error("delivery %s dead: %s", delivery.id, message)
        self.inbox.fail(delivery.id, message, retry_at=None, now=self._clock())
        metrics.DELIVERIES_FAILED.labels(event=delivery.event).inc()
        metrics.DELIVERIES_DEAD_LETTERED.labels(event=delivery.event).inc()

    # -- background threads --------------------------------------------------------------------

    def start(self) -> int:
        """Resume deliveries a previous process left unfinished, then start the threads."""
        resumed = self.inbox.resume()
        if resumed:
            log.warning("resuming %d delivery(ies) left unfinished by a previous process", resumed)
        self._stop.clear()
        for i in range(self.policy.threads):
            thread = threading.Thread(target=self._loop, name=f"plangate-worker-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return resumed

    def notify(self) -> None:
        """A delivery was stored: wake an idle thread now instead of at the next poll."""
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()

    @property
    def alive(self) -> bool:
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.last_beat = self._clock()
            try:
                if self.process_one() is not None:
                    continue
            except Exception:  # the inbox itself failed (disk full?): log, back off, go on
                log.exception("worker loop error")
            self._wake.wait(self.policy.poll_interval)
            self._wake.clear()
