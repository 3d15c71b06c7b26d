from __future__ import annotations

import asyncio
import json

from app.execute.metrics import MetricsSink
from app.execute.ports import FanoutSink, JsonlEventSink
from app.execute.runner import RunOptions
from app.observability import metrics as m
from tests.execute.fakes import (
    FakeClock,
    RecordingAction,
    fail,
    impls,
    make_runner,
    plan_from,
    shell_step,
)


def _value(name: str, **labels: str) -> float:
    return m.REGISTRY.get_sample_value(name, labels) or 0.0


def test_open_breaker_and_outcomes_are_visible_in_metrics(tmp_path):
    loaded = plan_from("steps:\n" + shell_step("a", retry="{max_attempts: 1}"))
    shell = RecordingAction("shell", key="http:metrics-test.example", script={"a": [fail("5xx")]})
    h = make_runner(tmp_path, impls(shell), options=RunOptions(breaker_failure_threshold=1))
    sink = MetricsSink(team="platform", environment="local", now=h.clock)
    h.runner.events = FanoutSink([h.events, sink])
    before = _value("plangate_step_outcomes_total", action="shell", outcome="failed")
    result = asyncio.run(h.runner.run(loaded))
    assert result.status == "compensated"
    assert _value("plangate_breaker_state", service="http:metrics-test.example") == 2  # open
    assert _value("plangate_step_outcomes_total", action="shell", outcome="failed") == before + 1
    assert (
        _value("plangate_runs_total", team="platform", environment="local", status="compensated")
        >= 1
    )


def test_jsonl_sink_batches_and_flushes(tmp_path):
    clock = FakeClock()
    path = tmp_path / "events.jsonl"
    sink = JsonlEventSink(path, now=clock, batch=3)
    sink.emit("a", x=1)
    sink.emit("b")
    assert not path.exists()  # batched
    sink.emit("c")
    assert len(path.read_text().splitlines()) == 3
    sink.emit("d", step="s")
    sink.flush()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [e["type"] for e in lines] == ["a", "b", "c", "d"]
    assert lines[3] == {"type": "d", "at": clock.t, "step": "s"}
