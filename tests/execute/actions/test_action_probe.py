"""``probe``: HTTP JSON and Prometheus samples, thresholds, failure_limit, verdict, fail closed."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from action_helpers import Recorder, make_ctx, run
from hypothesis import given, settings
from hypothesis import strategies as st

from app.actions.builtin import ProbeInputs
from app.errors import StepFailed
from app.execute.actions.errors import ProbeFailed
from app.execute.actions.probe import ProbeAction, judge


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def series(values: list[object]) -> Iterator[object]:
    yield from values


def prometheus_vector(value: object) -> dict:
    """An instant-query answer as documented at prometheus.io (HTTP API, instant queries)."""
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [
                {"metric": {"pod": "orders-0"}, "value": [1435781451.781, str(value)]},
            ],
        },
    }


def from_values(values: list[object], shape=prometheus_vector) -> Recorder:
    it = series(values)

    def answer(request: httpx.Request) -> httpx.Response:
        value = next(it)
        if isinstance(value, httpx.Response):
            return value
        return httpx.Response(200, json=shape(value))

    return Recorder(answer)


def prom(**kwargs) -> ProbeInputs:
    kwargs.setdefault("prometheus", {"url": "https://prom.example/", "query": "sum(up)"})
    kwargs.setdefault("interval", 30)
    return ProbeInputs.model_validate(kwargs)


def ctx(**kwargs):
    """Probes sample for minutes (with a fake sleep here): give them a step timeout to match."""
    kwargs.setdefault("timeout", 3600)
    return make_ctx(**kwargs)


def probe(rec: Recorder, sleeps: Sleeps | None = None) -> ProbeAction:
    return ProbeAction(transport=rec.transport(), sleep=sleeps or Sleeps())


def test_prometheus_instant_query_passes_and_records_every_sample():
    rec = from_values([0, 0, 0])
    sleeps = Sleeps()
    data = prom(samples=3, thresholds={"max_value": 0})
    result = run(probe(rec, sleeps).run(data, ctx()))
    assert result.outputs["verdict"] == "passed"
    assert [s["value"] for s in result.outputs["samples"]] == [0.0, 0.0, 0.0]
    assert sleeps.calls == [30, 30]  # between samples, not before the first
    request = rec.requests[0]
    assert request.url.path == "/api/v1/query"
    assert request.url.params["query"] == "sum(up)"
    assert request.headers["X-Correlation-Id"] == "corr-1234"
    assert result.usage.api_calls == 3


def test_threshold_breach_raises_probe_failed_with_the_failed_metrics():
    rec = from_values([0, 3, 5, 0, 0])
    data = prom(samples=5, failure_limit=1, thresholds={"max_value": 0})
    with pytest.raises(ProbeFailed) as info:
        run(probe(rec).run(data, ctx(step_id="probe-canary")))
    exc = info.value
    assert exc.kind == "probe.threshold" and not exc.retryable
    assert "step 'probe-canary'" in str(exc)
    assert "2 of 3 samples failed (failure_limit 1)" in str(exc)
    assert "value=3 breaks max_value (<= 0)" in str(exc)
    assert "value=5 breaks max_value (<= 0)" in str(exc)
    assert exc.outputs["verdict"] == "failed"
    assert [s["ok"] for s in exc.outputs["samples"]] == [True, False, False]
    assert len(rec.requests) == 3  # stopped as soon as the verdict was certain


def test_failures_within_the_limit_pass():
    data = prom(samples=4, failure_limit=1, thresholds={"max_value": 1})
    result = run(probe(from_values([0, 2, 0, 1])).run(data, ctx()))
    assert result.outputs["verdict"] == "passed" and result.outputs["failed"] == 1


def test_http_json_path_with_list_index():
    def shape(value):
        return {"data": {"windows": [{"error_rate": value}]}}

    data = ProbeInputs.model_validate(
        {
            "http": {"url": "https://svc.example/stats", "json_path": "data.windows.0.error_rate"},
            "metric": "error_rate",
            "samples": 2,
            "thresholds": {"max_error_rate": 0.01},
        }
    )
    result = run(probe(from_values([0.001, 0.002], shape)).run(data, ctx()))
    assert [s["value"] for s in result.outputs["samples"]] == [0.001, 0.002]


def test_prometheus_scalar_result():
    def shape(value):
        return {"status": "success", "data": {"resultType": "scalar", "result": [1.5, str(value)]}}

    data = prom(samples=1, thresholds={"min_value": 0.99})
    result = run(probe(from_values([1], shape)).run(data, ctx()))
    assert result.outputs["samples"][0]["value"] == 1.0


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (httpx.Response(500, text="down"), "HTTP 500"),
        (httpx.Response(400, json={"status": "error", "error": "bad_data"}), "HTTP 400.*bad_data"),
        (httpx.Response(200, text="not json"), "did not answer JSON"),
        (httpx.Response(200, json={"status": "error", "error": "parse error"}), "parse error"),
        (
            httpx.Response(
                200, json={"status": "success", "data": {"resultType": "vector", "result": []}}
            ),
            "returned 0 series",
        ),
        (httpx.Response(200, json=prometheus_vector("NaN")), "is NaN"),
        (httpx.Response(200, json=prometheus_vector("abc")), "not a number"),
    ],
)
def test_unmeasurable_samples_count_as_failed(answer: httpx.Response, reason: str):
    data = prom(samples=1, thresholds={"max_value": 100})
    with pytest.raises(ProbeFailed, match=reason) as info:
        run(probe(from_values([answer])).run(data, ctx()))
    assert info.value.outputs["samples"][0]["value"] is None


def test_missing_json_field_names_the_path():
    data = ProbeInputs.model_validate(
        {
            "http": {"url": "https://svc.example/stats", "json_path": "data.error_rate"},
            "samples": 1,
            "thresholds": {"max_value": 1},
        }
    )
    rec = Recorder(lambda r: httpx.Response(200, json={"data": {}}))
    with pytest.raises(ProbeFailed, match=r"'data\.error_rate' not found"):
        run(probe(rec).run(data, ctx()))


def test_rate_threshold_on_another_metric_is_a_config_error():
    data = prom(metric="latency_ms", thresholds={"max_error_rate": 0.1})
    rec = from_values([0])
    with pytest.raises(StepFailed, match="'max_error_rate' needs metric 'error_rate'") as info:
        run(probe(rec).run(data, ctx()))
    assert info.value.kind == "probe.config" and not info.value.retryable
    assert rec.requests == []


def test_rate_threshold_with_the_generic_value_metric_applies():
    data = prom(samples=1, thresholds={"max_error_rate": 0.01})  # metric defaults to "value"
    with pytest.raises(ProbeFailed, match=r"value=0\.5 breaks max_error_rate"):
        run(probe(from_values([0.5])).run(data, ctx()))


def test_sampling_longer_than_the_timeout_fails_at_once():
    data = prom(samples=5, interval=30, thresholds={"max_value": 0})
    rec = from_values([0] * 5)
    with pytest.raises(StepFailed, match="need 120s, but the step's timeout is 60s") as info:
        run(probe(rec).run(data, ctx(timeout=60)))
    assert info.value.kind == "probe.config" and rec.requests == []


def test_judge_reports_each_broken_threshold():
    data = prom(metric="latency_ms", thresholds={"max_latency_ms": 250, "min_value": 1})
    assert judge(data, 100) == []
    assert judge(data, 300) == ["latency_ms=300 breaks max_latency_ms (<= 250)"]
    assert judge(data, 0.5) == ["latency_ms=0.5 breaks min_value (>= 1)"]


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=8),
    limit=st.integers(min_value=0, max_value=7),
)
def test_verdict_is_failed_exactly_when_failures_exceed_the_limit(values, limit):
    if limit >= len(values):
        limit = len(values) - 1
    data = prom(samples=len(values), failure_limit=limit, thresholds={"max_value": 1})
    failures = sum(v > 1 for v in values)
    try:
        result = run(probe(from_values(values)).run(data, ctx()))
        verdict = result.outputs["verdict"]
    except ProbeFailed as exc:
        verdict = exc.outputs["verdict"]
    assert verdict == ("failed" if failures > limit else "passed")


def test_breaker_key_is_the_source_host():
    assert ProbeAction().breaker_key(prom(thresholds={"max_value": 0})) == "probe:prom.example"
