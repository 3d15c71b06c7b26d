"""Circuit breakers per service boundary (``Action.breaker_key``), with an injected clock.

Closed → (``failure_threshold`` consecutive failures) → open: calls fail fast with
``BreakerOpen`` (a retryable ``StepFailed`` of kind ``breaker.open``, so no side effect is
attempted) → after ``reset_timeout`` seconds, half-open: one trial call; success closes, failure
opens again for another ``reset_timeout``.

Why not pybreaker: pybreaker 1.x reads ``datetime.now(UTC)`` inside ``CircuitOpenState`` (no
clock hook), and its async path is Tornado-only; testing "half-opens after the timeout" would
need real waiting or monkeypatching a library global. This is the same three-state machine in
~60 lines with the clock as an argument (see docs/executor.md). Only failures that say the
*service* is unwell count (``retryable`` errors and timeouts); a bad request
(``retryable=False``) says nothing about the service and does not trip the breaker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from app.errors import StepFailed

__all__ = ["Breaker", "BreakerOpen", "BreakerRegistry", "BreakerState"]

BreakerState = Literal["closed", "open", "half_open"]
#: (key, old state, new state)
OnChange = Callable[[str, BreakerState, BreakerState], None]


class BreakerOpen(StepFailed):
    """The service boundary's breaker is open: the call was not made."""

    default_hint = (
        "the service behind this step failed repeatedly; the run pauses. Check the service, "
        "then re-run the same plan to resume (see docs/runbooks.md, 'A breaker is stuck open')"
    )

    def __init__(self, key: str, *, step: str, retry_in: float) -> None:
        super().__init__(
            f"step '{step}': circuit breaker '{key}' is open (next trial in {retry_in:.1f}s)",
            step=step,
            kind="breaker.open",
            retryable=True,
        )
        self.key = key
        self.retry_after = retry_in


@dataclass
class Breaker:
    key: str
    failure_threshold: int
    reset_timeout: float
    clock: Callable[[], float]
    on_change: OnChange | None = None
    state: BreakerState = "closed"
    failures: int = 0
    opened_at: float = 0.0
    _trial_in_flight: bool = False

    def _set(self, new: BreakerState) -> None:
        old, self.state = self.state, new
        if old != new and self.on_change is not None:
            self.on_change(self.key, old, new)

    def current(self) -> BreakerState:
        """The state now (an open breaker whose timeout has passed reads as half-open)."""
        if self.state == "open" and self.clock() - self.opened_at >= self.reset_timeout:
            self._set("half_open")
            self._trial_in_flight = False
        return self.state

    def before_call(self, step: str) -> None:
        """Raise ``BreakerOpen`` unless a call may go through now."""
        state = self.current()
        if state == "closed":
            return
        if state == "half_open" and not self._trial_in_flight:
            self._trial_in_flight = True
            return
        retry_in = max(0.0, self.opened_at + self.reset_timeout - self.clock())
        raise BreakerOpen(self.key, step=step, retry_in=retry_in)

    def success(self) -> None:
        self.failures = 0
        self._trial_in_flight = False
        self._set("closed")

    def failure(self, exc: BaseException) -> None:
        if isinstance(exc, StepFailed) and not exc.retryable:
            # the request was bad, not the service; release a half-open trial
            self._trial_in_flight = False
            return
        self.failures += 1
        if self.state == "half_open" or self.failures >= self.failure_threshold:
            self.opened_at = self.clock()
            self._trial_in_flight = False
            self._set("open")


class BreakerRegistry:
    """One breaker per key, created on first use with the registry's settings."""

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        failure_threshold: int = 5,
        reset_timeout: float = 30.0,
        on_change: OnChange | None = None,
    ) -> None:
        if failure_threshold < 1 or reset_timeout < 0:
            raise ValueError("failure_threshold must be >= 1 and reset_timeout >= 0")
        self.clock = clock
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.on_change = on_change
        self._breakers: dict[str, Breaker] = {}

    def get(self, key: str) -> Breaker:
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = Breaker(
                key, self.failure_threshold, self.reset_timeout, self.clock, self.on_change
            )
            self._breakers[key] = breaker
        return breaker

    def states(self) -> dict[str, BreakerState]:
        return {key: b.current() for key, b in sorted(self._breakers.items())}
