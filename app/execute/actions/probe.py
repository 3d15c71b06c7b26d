"""``probe``: sample one metric several times and judge it; the canary's promote/abort signal.

Modelled on Argo Rollouts' AnalysisTemplate (``count``, ``interval``, ``successCondition``,
``failureLimit``): ``samples`` measurements, ``interval`` seconds apart, each judged against the
``thresholds``; the probe fails when more than ``failure_limit`` samples fail. Sampling stops
early once that is certain (Argo does the same), so a broken canary aborts quickly.

Sources:
- ``http``: GET a JSON document and read the number at the dotted ``json_path``
  (``data.error_rate``; list indices as numbers: ``items.0.value``).
- ``prometheus``: the HTTP API instant query ``GET {url}/api/v1/query?query=...``; the result must
  be a ``scalar`` or a ``vector`` with exactly one series (wrap the query in ``sum()``).

Fail closed: a sample that cannot be measured (network error, missing field, not a number, NaN,
an empty vector) counts as a failed sample, with the reason recorded. ``max_value``/``min_value``
apply to any metric; ``max_error_rate``, ``min_success_rate`` and ``max_latency_ms`` to the metric
of that name or to the generic ``value`` (the default); naming another metric with them
(``metric: latency_ms`` with ``max_error_rate``) is a configuration error, never ignored.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from pydantic import BaseModel

from app.actions.builtin import ProbeInputs
from app.execute.actions._support import deadline, expect_inputs, host_of
from app.execute.actions.base import ActionContext, ActionResult, Usage
from app.execute.actions.errors import ActionFailed, ProbeFailed

__all__ = ["ProbeAction", "judge"]

Sleep = Callable[[float], Awaitable[None]]

#: threshold name -> (the metric it applies to or None for any, comparison, symbol)
_THRESHOLDS: dict[str, tuple[str | None, Callable[[float, float], bool], str]] = {
    "max_value": (None, lambda v, t: v <= t, "<="),
    "min_value": (None, lambda v, t: v >= t, ">="),
    "max_error_rate": ("error_rate", lambda v, t: v <= t, "<="),
    "min_success_rate": ("success_rate", lambda v, t: v >= t, ">="),
    "max_latency_ms": ("latency_ms", lambda v, t: v <= t, "<="),
}


class _Unmeasurable(Exception):
    """A sample could not be taken; it counts as failed."""


def judge(data: ProbeInputs, value: float) -> list[str]:
    """The thresholds ``value`` breaks, as readable conditions (empty: the sample passed)."""
    broken = []
    for name, limit in data.thresholds.model_dump().items():
        if limit is None:
            continue
        _, ok, symbol = _THRESHOLDS[name]
        if not ok(value, limit):
            broken.append(f"{data.metric}={value:g} breaks {name} ({symbol} {limit:g})")
    return broken


class ProbeAction:
    """``sleep`` is injected so tests take no time; ``transport`` as for ``http``."""

    name = "probe"

    def __init__(
        self,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._transport = transport
        self._sleep = sleep
        self._monotonic = monotonic

    def breaker_key(self, inputs: BaseModel) -> str:
        source = getattr(inputs, "http", None) or getattr(inputs, "prometheus", None)
        return f"probe:{host_of(str(getattr(source, 'url', '')))}"

    async def run(self, inputs: BaseModel, ctx: ActionContext) -> ActionResult:
        data = expect_inputs(inputs, ProbeInputs, ctx)
        self._check_thresholds(data, ctx)
        source = self._describe(data)
        if ctx.dry_run:
            return ActionResult(log=f"dry run: would sample {source} {data.samples} times")
        samples: list[dict[str, Any]] = []
        failed = 0
        async with (
            deadline(ctx, f"probe of {source}"),
            httpx.AsyncClient(
                transport=self._transport,
                timeout=ctx.timeout if ctx.timeout > 0 else None,
                headers={"X-Correlation-Id": ctx.correlation_id},
                follow_redirects=False,
            ) as client,
        ):
            for index in range(data.samples):
                if index:
                    await self._sleep(data.interval)
                sample = await self._sample(client, data, index)
                samples.append(sample)
                failed += not sample["ok"]
                if failed > data.failure_limit:
                    break  # the verdict cannot change any more
        verdict = "failed" if failed > data.failure_limit else "passed"
        outputs = {
            "verdict": verdict,
            "metric": data.metric,
            "source": source,
            "samples": samples,
            "failed": failed,
            "failure_limit": data.failure_limit,
            "thresholds": {k: v for k, v in data.thresholds.model_dump().items() if v is not None},
        }
        log = "\n".join(_sample_line(s) for s in samples)
        if verdict == "failed":
            bad = "; ".join(_sample_line(s) for s in samples if not s["ok"])
            raise ProbeFailed(
                f"step '{ctx.step_id}': probe of {source} failed: {failed} of {len(samples)} "
                f"samples failed (failure_limit {data.failure_limit}): {bad}",
                step=ctx.step_id,
                outputs=outputs,
            )
        return ActionResult(outputs=outputs, usage=Usage(api_calls=len(samples)), log=log)

    @staticmethod
    def _check_thresholds(data: ProbeInputs, ctx: ActionContext) -> None:
        for name, limit in data.thresholds.model_dump().items():
            applies_to = _THRESHOLDS[name][0]
            if (
                limit is not None
                and applies_to is not None
                and data.metric not in ("value", applies_to)
            ):
                raise ActionFailed(
                    f"step '{ctx.step_id}': threshold '{name}' needs metric '{applies_to}', "
                    f"but the probe measures '{data.metric}'",
                    step=ctx.step_id,
                    kind="probe.config",
                    retryable=False,
                    hint=f"set 'metric: {applies_to}' or use max_value/min_value",
                )
        waiting = (data.samples - 1) * data.interval
        if ctx.timeout > 0 and waiting >= ctx.timeout:
            # fail at once rather than time out after minutes of sampling a canary
            raise ActionFailed(
                f"step '{ctx.step_id}': {data.samples} samples {data.interval}s apart need "
                f"{waiting}s, but the step's timeout is {ctx.timeout:g}s",
                step=ctx.step_id,
                kind="probe.config",
                retryable=False,
                hint="raise the step's timeout above samples x interval plus request time",
            )

    @staticmethod
    def _describe(data: ProbeInputs) -> str:
        if data.http is not None:
            return f"{data.http.url} [{data.http.json_path}]"
        assert data.prometheus is not None
        return f"prometheus {data.prometheus.url} query {data.prometheus.query!r}"

    async def _sample(
        self, client: httpx.AsyncClient, data: ProbeInputs, index: int
    ) -> dict[str, Any]:
        started = self._monotonic()
        try:
            if data.http is not None:
                value = await _measure_http(client, data.http.url, data.http.json_path)
            else:
                assert data.prometheus is not None
                value = await _measure_prometheus(
                    client, data.prometheus.url, data.prometheus.query
                )
        except _Unmeasurable as exc:
            return {"index": index, "value": None, "ok": False, "reason": str(exc)}
        elapsed_ms = round((self._monotonic() - started) * 1000, 3)
        broken = judge(data, value)
        return {
            "index": index,
            "value": value,
            "ok": not broken,
            "reason": "; ".join(broken) if broken else "within thresholds",
            "elapsed_ms": elapsed_ms,
        }


def _sample_line(sample: dict[str, Any]) -> str:
    state = "ok" if sample["ok"] else "FAILED"
    return f"sample {sample['index'] + 1}: {state}: {sample['reason']}"


async def _get_json(client: httpx.AsyncClient, url: str, **params: str) -> Any:
    try:
        response = await client.get(url, params=params or None)
    except httpx.HTTPError as exc:
        raise _Unmeasurable(f"measurement error: {type(exc).__name__}: {exc}") from exc
    if response.status_code != 200:
        detail = ""
        try:  # Prometheus explains a refused query in JSON: {"status": "error", "error": ...}
            body = response.json()
            detail = f": {body['error']}" if isinstance(body, dict) and "error" in body else ""
        except ValueError:
            pass
        raise _Unmeasurable(f"measurement error: HTTP {response.status_code} from {url}{detail}")
    try:
        return response.json()
    except ValueError as exc:
        raise _Unmeasurable(f"measurement error: {url} did not answer JSON") from exc


def _number(raw: Any, where: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise _Unmeasurable(f"measurement error: {where} is {type(raw).__name__}, not a number")
    try:
        value = float(raw)
    except ValueError as exc:
        raise _Unmeasurable(f"measurement error: {where} is {raw!r}, not a number") from exc
    if math.isnan(value):
        raise _Unmeasurable(f"measurement error: {where} is NaN")
    return value


def dotted(document: Any, path: str) -> Any:
    """Follow ``a.b.0.c`` through dicts and lists; raise ``_Unmeasurable`` naming the gap."""
    node = document
    walked: list[str] = []
    for part in path.split("."):
        walked.append(part)
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise _Unmeasurable(f"measurement error: '{'.'.join(walked)}' not found in response")
    return node


async def _measure_http(client: httpx.AsyncClient, url: str, json_path: str) -> float:
    return _number(dotted(await _get_json(client, url), json_path), f"'{json_path}'")


async def _measure_prometheus(client: httpx.AsyncClient, base_url: str, query: str) -> float:
    """Prometheus HTTP API instant query; see prometheus.io/docs/prometheus/latest/querying/api."""
    doc = await _get_json(client, base_url.rstrip("/") + "/api/v1/query", query=query)
    if not isinstance(doc, dict) or doc.get("status") != "success":
        error = doc.get("error") if isinstance(doc, dict) else None
        raise _Unmeasurable(f"measurement error: query failed: {error or 'no success status'}")
    result_type = dotted(doc, "data.resultType")
    result = dotted(doc, "data.result")
    if result_type == "scalar" and isinstance(result, list) and len(result) == 2:
        return _number(result[1], "the scalar result")
    if result_type == "vector" and isinstance(result, list):
        if len(result) != 1:
            raise _Unmeasurable(
                f"measurement error: the query returned {len(result)} series, not exactly one "
                "(aggregate it, e.g. sum(...))"
            )
        return _number(dotted(result[0], "value.1"), "the sample value")
    raise _Unmeasurable(f"measurement error: result type {result_type!r} is not scalar or vector")
