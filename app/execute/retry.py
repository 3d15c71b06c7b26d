"""Retries from a step's ``RetryPolicy``, driven by tenacity; ``sleep`` and ``rng`` injected.

The delay before attempt *n* (n ≥ 2) is ``min(initial_interval * backoff_coefficient**(n-2),
max_interval)``; with ``jitter: full`` the actual delay is uniform in ``[0, delay]`` (AWS "full
jitter"). A remote's ``retry_after`` (``ActionFailed.retry_after``) raises the delay to at
least that. The *error* decides whether to retry, never its text: ``StepFailed.retryable`` and
its ``kind`` against ``non_retryable``. Anything that is not a ``StepFailed`` is a bug in an
action and is not retried.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from app.errors import StepFailed
from app.plan.model import RetryPolicy

__all__ = ["Sleep", "backoff_delay", "is_retryable", "run_with_retries"]

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]
#: called before sleeping: (attempt that failed, error, delay in seconds)
OnRetry = Callable[[int, StepFailed, float], None]


def backoff_delay(policy: RetryPolicy, failed_attempt: int, rng: random.Random) -> float:
    """Seconds to wait after attempt ``failed_attempt`` (1-based) failed."""
    computed = min(
        policy.initial_interval * policy.backoff_coefficient ** (failed_attempt - 1),
        policy.max_interval,
    )
    if policy.jitter == "full":
        return rng.uniform(0.0, computed)
    return computed


def is_retryable(policy: RetryPolicy, exc: BaseException) -> bool:
    return isinstance(exc, StepFailed) and exc.retryable and exc.kind not in policy.non_retryable


async def run_with_retries(
    attempt_fn: Callable[[int], Awaitable[T]],
    policy: RetryPolicy,
    *,
    sleep: Sleep,
    rng: random.Random,
    on_retry: OnRetry | None = None,
) -> T:
    """Call ``attempt_fn(n)`` for n = 1, 2, ... until it succeeds or the policy says stop.

    Re-raises the last error unchanged (``StepFailed`` with its kind), so callers see why.
    """

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        delay = backoff_delay(policy, state.attempt_number, rng)
        retry_after: Any = getattr(exc, "retry_after", None)
        if isinstance(retry_after, int | float) and retry_after > delay:
            delay = min(float(retry_after), max(policy.max_interval, delay))
        return delay

    def before_sleep(state: RetryCallState) -> None:
        if on_retry is None or state.outcome is None or state.next_action is None:
            return
        exc = state.outcome.exception()
        if isinstance(exc, StepFailed):
            on_retry(state.attempt_number, exc, state.next_action.sleep)

    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.max_attempts),
        wait=wait,
        retry=retry_if_exception(lambda exc: is_retryable(policy, exc)),
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            return await attempt_fn(attempt.retry_state.attempt_number)
    raise AssertionError("unreachable: tenacity either returns or re-raises")  # pragma: no cover
