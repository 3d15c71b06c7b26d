"""Step result cache (``cache: {ttl}``): reuse within the TTL, expiry, keying, never mutating."""

from __future__ import annotations

import asyncio

import pytest

from app.errors import InputError
from tests.execute.fakes import FakeClock, RecordingAction, impls, make_runner, plan_from


def cached_plan(message: str = "hello", *, ttl: str = "1h", plan_id: str = "cache-plan"):
    return plan_from(
        "steps:\n"
        f"  - id: fetch\n    action: noop\n    with: {{message: {message}}}\n"
        f"    cache: {{ttl: {ttl}}}\n"
        "  - id: use\n    action: noop\n    needs: [fetch]\n"
        "    with: {message: '${{ steps.fetch.outputs.value }}'}\n",
        plan_id=plan_id,
    )


def run_once(tmp_path, loaded, clock, run_id, open_state):
    """One fresh run of ``loaded`` (a different plan id each time, so runs never resume)."""
    noop = RecordingAction("noop", outputs={"fetch": {"value": f"v-{run_id}"}})
    h = make_runner(
        tmp_path, open_state=open_state, implementations=impls(noop), clock=clock, run_id=run_id
    )
    try:
        result = asyncio.run(h.runner.run(loaded))
    finally:
        h.state.close()
    return result, noop, h


def test_cached_result_is_reused_within_ttl(tmp_path, open_state):
    clock = FakeClock()
    first, noop1, _ = run_once(tmp_path, cached_plan(plan_id="p1"), clock, "run-1", open_state)
    assert first.status == "succeeded", first.reason
    assert noop1.steps() == ["fetch", "use"]

    clock.t += 3599  # still inside the hour
    second, noop2, h2 = run_once(tmp_path, cached_plan(plan_id="p2"), clock, "run-2", open_state)
    assert second.status == "succeeded", second.reason
    assert noop2.steps() == ["use"]  # fetch was not called
    # the cached outputs feed later steps exactly as a real run's would
    assert noop2.calls[0].inputs["message"] == "v-run-1"
    assert second.steps["fetch"].status == "succeeded"
    assert second.steps["fetch"].outputs == {"value": "v-run-1"}
    cached = [f for t, f in h2.events.events if t == "step.cached"]
    assert len(cached) == 1
    assert cached[0]["step"] == "fetch"
    assert cached[0]["age"] == 3599
    assert cached[0]["cache_key"].startswith("sha256:")


def test_cached_result_expires_after_ttl(tmp_path, open_state):
    clock = FakeClock()
    run_once(tmp_path, cached_plan(plan_id="p1"), clock, "run-1", open_state)
    clock.t += 3600  # exactly the TTL: expired
    second, noop2, h2 = run_once(tmp_path, cached_plan(plan_id="p2"), clock, "run-2", open_state)
    assert second.status == "succeeded"
    assert noop2.steps() == ["fetch", "use"]
    assert not [t for t, _ in h2.events.events if t == "step.cached"]
    # the fresh result replaced the old one: a third run reuses run-2's value
    clock.t += 10
    third, noop3, _ = run_once(tmp_path, cached_plan(plan_id="p3"), clock, "run-3", open_state)
    assert noop3.steps() == ["use"]
    assert third.steps["fetch"].outputs == {"value": "v-run-2"}


def test_different_inputs_miss_the_cache(tmp_path, open_state):
    clock = FakeClock()
    run_once(tmp_path, cached_plan("hello", plan_id="p1"), clock, "run-1", open_state)
    second, noop2, h2 = run_once(
        tmp_path, cached_plan("other", plan_id="p2"), clock, "run-2", open_state
    )
    assert second.status == "succeeded"
    assert noop2.steps() == ["fetch", "use"]
    assert not [t for t, _ in h2.events.events if t == "step.cached"]


def test_step_without_cache_never_reads_the_cache(tmp_path, open_state):
    clock = FakeClock()
    run_once(tmp_path, cached_plan(plan_id="p1"), clock, "run-1", open_state)
    plain = plan_from(
        "steps:\n  - id: fetch\n    action: noop\n    with: {message: hello}\n", plan_id="p2"
    )
    _, noop2, _ = run_once(tmp_path, plain, clock, "run-2", open_state)
    assert noop2.steps() == ["fetch"]


def test_mutating_step_is_never_served_from_cache(tmp_path, open_state):
    """Security invariant: a step that changes the world always runs (or is refused)."""
    clock = FakeClock()
    loaded = plan_from(
        "steps:\n  - id: deploy\n    action: shell\n    with: {run: [deploy]}\n"
        "    cache: {ttl: 1h}\n    compensate: {none: test}\n"
    )
    # even with a fresh entry planted under the very key the step would use
    from app.actions.builtin import ShellInputs
    from app.execute.runner import cache_key_for

    key = cache_key_for("shell", ShellInputs.model_validate({"run": ["deploy"]}))
    store = open_state(tmp_path)
    store.cache_put(key, "shell", {"planted": "yes"}, 3600.0, clock())
    store.close()

    shell = RecordingAction("shell")
    h = make_runner(tmp_path, open_state=open_state, implementations=impls(shell), clock=clock)
    with pytest.raises(InputError, match="step 'deploy' mutates and declares 'cache'"):
        asyncio.run(h.runner.run(loaded))
    assert shell.calls == []
    assert h.state.get_run(loaded.digest) is None
    assert not [t for t, _ in h.events.events if t == "step.cached"]


def test_cache_entry_from_the_future_is_not_trusted(tmp_path, open_state):
    store = open_state(tmp_path)
    store.cache_put("k", "noop", {"a": "1"}, 60.0, 1000.0)
    assert store.cache_get("k", 1000.0) is not None
    assert store.cache_get("k", 1059.9) is not None
    assert store.cache_get("k", 1060.0) is None
    assert store.cache_get("k", 999.0) is None
    store.close()


def test_canary_analysis_step_is_never_served_from_cache(tmp_path, open_state):
    """A cached probe would decide promote/abort on stale metrics: refused before anything runs."""
    loaded = plan_from(
        "canary: {steps: [canary], analysis: [judge]}\n"
        "steps:\n"
        "  - id: canary\n    action: shell\n    with: {run: [deploy, canary]}\n"
        "    compensate: {none: test}\n"
        "  - id: judge\n    action: probe\n    needs: [canary]\n    cache: {ttl: 1h}\n"
        "    with:\n      metric: error_rate\n"
        "      http: {url: 'https://metrics.example/canary', json_path: data.error_rate}\n"
        "      thresholds: {max_error_rate: 0.01}\n"
    )
    shell, probe = RecordingAction("shell"), RecordingAction("probe")
    h = make_runner(tmp_path, open_state=open_state, implementations=impls(shell, probe))
    with pytest.raises(InputError, match="step 'judge' is canary analysis and declares 'cache'"):
        asyncio.run(h.runner.run(loaded))
    assert shell.calls == [] and probe.calls == []
