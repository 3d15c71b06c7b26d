from __future__ import annotations

import asyncio
import random

import pytest

from app.errors import StepFailed
from app.execute.breaker import BreakerOpen, BreakerRegistry
from app.execute.retry import backoff_delay, run_with_retries
from app.execute.runner import RunOptions
from app.plan.model import RetryPolicy
from tests.execute.fakes import (
    FakeClock,
    RecordingAction,
    fail,
    impls,
    make_runner,
    plan_from,
    shell_step,
)


def _policy(**kw) -> RetryPolicy:
    return RetryPolicy.model_validate({"jitter": "none", **kw})


def test_backoff_grows_and_caps():
    p = _policy(initial_interval=1.0, backoff_coefficient=2.0, max_interval=5.0)
    rng = random.Random(0)
    assert [backoff_delay(p, n, rng) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]


def test_full_jitter_stays_within_the_computed_delay():
    p = RetryPolicy(initial_interval=4.0, max_interval=60.0)
    rng = random.Random(1)
    delays = [backoff_delay(p, 3, rng) for _ in range(200)]
    assert all(0.0 <= d <= 16.0 for d in delays)
    assert len(set(delays)) > 100


def _run(fn, policy):
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    async def go():
        return await run_with_retries(fn, policy, sleep=sleep, rng=random.Random(0))

    return asyncio.run(go()), slept


def test_retries_until_success_without_real_sleeping():
    calls = []

    async def fn(n):
        calls.append(n)
        if n < 3:
            raise fail("flaky")
        return "ok"

    value, slept = _run(fn, _policy(max_attempts=5, initial_interval=2.0))
    assert value == "ok" and calls == [1, 2, 3] and slept == [2.0, 4.0]


@pytest.mark.parametrize(
    "error",
    [fail("http.4xx"), fail("other", retryable=False)],
    ids=["non_retryable_kind", "retryable_false"],
)
def test_stops_at_once_for_non_retryable(error):
    calls = []

    async def fn(n):
        calls.append(n)
        raise error

    with pytest.raises(StepFailed):
        _run(fn, _policy(max_attempts=5, non_retryable=["http.4xx"]))
    assert calls == [1]


def test_gives_up_after_max_attempts_with_last_error():
    async def fn(n):
        raise fail(f"kind{n}")

    with pytest.raises(StepFailed, match="kind3"):
        _run(fn, _policy(max_attempts=3))


def test_retry_after_from_the_remote_is_honoured():
    async def fn(n):
        if n == 1:
            err = fail("rate")
            err.retry_after = 7.0
            raise err
        return n

    _, slept = _run(fn, _policy(max_attempts=2, initial_interval=1.0, max_interval=10.0))
    assert slept == [7.0]


def test_breaker_opens_after_threshold_and_half_opens_after_timeout():
    clock = FakeClock()
    changes = []
    reg = BreakerRegistry(
        clock=clock,
        failure_threshold=3,
        reset_timeout=30.0,
        on_change=lambda k, o, n: changes.append((k, o, n)),
    )
    b = reg.get("http:api")
    for _ in range(3):
        b.before_call("s")
        b.failure(fail("5xx"))
    assert b.current() == "open"
    with pytest.raises(BreakerOpen, match="circuit breaker 'http:api' is open"):
        b.before_call("s")
    clock.t += 30.0
    assert b.current() == "half_open"
    b.before_call("s")  # the one trial call
    with pytest.raises(BreakerOpen):
        b.before_call("s")  # a second concurrent call is not allowed through
    b.failure(fail("5xx"))
    assert b.current() == "open"
    clock.t += 30.0
    b.before_call("s")
    b.success()
    assert b.current() == "closed"
    assert changes == [
        ("http:api", "closed", "open"),
        ("http:api", "open", "half_open"),
        ("http:api", "half_open", "open"),
        ("http:api", "open", "half_open"),
        ("http:api", "half_open", "closed"),
    ]


def test_bad_requests_do_not_trip_the_breaker():
    b = BreakerRegistry(clock=FakeClock(), failure_threshold=1).get("k")
    b.failure(fail("http.4xx", retryable=False))
    assert b.current() == "closed"


def test_service_failure_opens_the_breaker_and_emits_an_event(tmp_path):
    loaded = plan_from(
        "steps:\n"
        + shell_step("a", retry="{max_attempts: 2, initial_interval: 1s}")
        + shell_step("b", ["a"])
        + shell_step("c", retry="{max_attempts: 1}")
        + shell_step("d", ["c"])
    )
    shell = RecordingAction("shell", script={"c": [fail("5xx"), fail("5xx")]})
    h = make_runner(
        tmp_path,
        impls(shell),
        options=RunOptions(max_parallel=1, breaker_failure_threshold=1, breaker_reset_timeout=3600),
    )
    result = asyncio.run(h.runner.run(loaded))
    # a and b succeed; c fails once (threshold 1 opens the breaker) and for good (1 attempt)
    assert result.status == "compensated"
    assert (
        "breaker.state",
        {"breaker": "shell", "old": "closed", "new": "open"},
    ) in h.events.events


def test_breaker_open_pauses_run_instead_of_failing(tmp_path):
    loaded = plan_from(
        "steps:\n"
        + shell_step("a", retry="{max_attempts: 1}")
        + shell_step("b", retry="{max_attempts: 2, initial_interval: 1s}")
        + shell_step("c", ["b"])
    )
    shell = RecordingAction("shell", script={"b": [fail("5xx")]})
    h = make_runner(
        tmp_path,
        impls(shell),
        options=RunOptions(max_parallel=1, breaker_failure_threshold=1, breaker_reset_timeout=3600),
    )
    # open the breaker before the run, as an earlier failing call would
    h.runner.breakers.get("shell").failure(fail("5xx"))
    result = asyncio.run(h.runner.run(loaded))
    assert result.status == "paused"
    assert "breaker 'shell' is open" in result.reason
    assert shell.calls == []  # failed fast: no call reached the service
    assert result.steps["c"].status == "blocked"
    assert result.steps["c"].error == "waits for 'b' (breaker open)"
    paused = h.events.of("step.paused")
    assert {p["step"] for p in paused} == {"a", "b"}
    assert paused[1]["dependents"] == ["c"]
