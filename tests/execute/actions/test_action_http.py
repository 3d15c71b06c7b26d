"""``http``: headers (secrets by name, idempotency, correlation), outputs, error classes."""

from __future__ import annotations

import asyncio
import json
import socket

import httpx
import pytest
from action_helpers import Recorder, make_ctx, run

from app.actions.builtin import HttpInputs
from app.errors import StepFailed
from app.execute.actions.errors import ActionFailed
from app.execute.actions.http import HttpAction

NOW = 1_700_000_000.0


def http(recorder: Recorder) -> HttpAction:
    return HttpAction(transport=recorder.transport(), now=lambda: NOW)


def answer(status: int, **kwargs) -> Recorder:
    return Recorder(lambda request: httpx.Response(status, **kwargs))


def inputs(**kwargs) -> HttpInputs:
    kwargs.setdefault("url", "https://api.example.com/v1/things")
    return HttpInputs.model_validate(kwargs)


def test_request_carries_idempotency_correlation_and_secret_headers():
    rec = answer(201, json={"batch_id": "b-7", "status": "queued"})
    data = inputs(
        method="POST",
        headers={"Accept": "application/json"},
        secret_headers={"Authorization": "API_TOKEN"},
        json={"items": [1, 2]},
    )
    ctx = make_ctx(secrets={"API_TOKEN": "Bearer tok-123456"})
    result = run(http(rec).run(data, ctx))
    request = rec.requests[0]
    assert request.method == "POST"
    assert request.headers["Authorization"] == "Bearer tok-123456"
    assert request.headers["Idempotency-Key"] == ctx.idempotency_key
    assert request.headers["X-Correlation-Id"] == "corr-1234"
    assert request.headers["Accept"] == "application/json"
    assert json.loads(request.content) == {"items": [1, 2]}
    assert result.usage.api_calls == 1


def test_json_response_becomes_outputs_with_top_level_fields():
    rec = answer(201, json={"batch_id": "b-7", "status": "queued", "count": 2})
    result = run(http(rec).run(inputs(method="POST", json={}), make_ctx()))
    out = result.outputs
    assert out["status"] == 201  # the HTTP status wins over the body's "status" field
    assert out["json"] == {"batch_id": "b-7", "status": "queued", "count": 2}
    assert out["batch_id"] == "b-7" and out["count"] == 2
    assert json.loads(out["body"])["batch_id"] == "b-7"
    assert out["headers"]["content-type"] == "application/json"


def test_plain_body_is_sent_as_is():
    rec = answer(204)
    run(http(rec).run(inputs(method="PUT", body="a=1"), make_ctx()))
    assert rec.requests[0].content == b"a=1"
    assert rec.requests[0].method == "PUT"


def test_unexpected_success_status_is_not_retryable():
    rec = answer(200, text="ok")
    with pytest.raises(StepFailed, match="answered HTTP 200") as info:
        run(http(rec).run(inputs(expect_status=[201]), make_ctx()))
    assert info.value.kind == "http.unexpected_status" and not info.value.retryable


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [
        (400, "http.4xx", False),
        (404, "http.4xx", False),
        (409, "http.4xx", False),
        (408, "http.408", True),
        (429, "http.429", True),
        (500, "http.5xx", True),
        (503, "http.5xx", True),
        (301, "http.unexpected_status", False),
    ],
)
def test_status_classification(status: int, kind: str, retryable: bool):
    with pytest.raises(StepFailed) as info:
        run(http(answer(status, text="nope")).run(inputs(), make_ctx()))
    assert (info.value.kind, info.value.retryable) == (kind, retryable)
    assert f"HTTP {status}: nope" in str(info.value)
    assert "GET https://api.example.com/v1/things" in str(info.value)


def test_retry_after_seconds_is_reported():
    rec = answer(429, headers={"Retry-After": "7"})
    with pytest.raises(ActionFailed) as info:
        run(http(rec).run(inputs(), make_ctx()))
    assert info.value.retry_after == 7.0


def test_retry_after_http_date_is_reported_relative_to_the_injected_clock():
    rec = answer(503, headers={"Retry-After": "Tue, 14 Nov 2023 22:15:20 GMT"})  # NOW + 120
    with pytest.raises(ActionFailed) as info:
        run(http(rec).run(inputs(), make_ctx()))
    assert info.value.retry_after == pytest.approx(120.0)
    assert info.value.kind == "http.5xx"


def test_secret_echoed_in_an_error_body_is_redacted():
    rec = Recorder(lambda r: httpx.Response(401, text=f"bad token {r.headers['X-Key']}"))
    data = inputs(secret_headers={"X-Key": "API_TOKEN"})
    with pytest.raises(StepFailed) as info:
        run(http(rec).run(data, make_ctx(secrets={"API_TOKEN": "tok-abcdef"})))
    assert "tok-abcdef" not in str(info.value) and "bad token ***" in str(info.value)


def test_secret_echoed_in_a_response_is_redacted_from_outputs():
    rec = Recorder(lambda r: httpx.Response(200, json={"echo": r.headers["X-Key"]}))
    data = inputs(secret_headers={"X-Key": "API_TOKEN"})
    result = run(http(rec).run(data, make_ctx(secrets={"API_TOKEN": "tok-abcdef"})))
    assert "tok-abcdef" not in json.dumps(dict(result.outputs))
    assert result.outputs["echo"] == "***"


def test_missing_secret_header_sends_nothing():
    rec = answer(200)
    with pytest.raises(StepFailed, match="secret 'API_TOKEN'") as info:
        run(http(rec).run(inputs(secret_headers={"Authorization": "API_TOKEN"}), make_ctx()))
    assert info.value.kind == "secret.missing" and rec.requests == []


def test_connection_refused_on_a_real_local_port_is_retryable():
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    data = inputs(url=f"http://127.0.0.1:{port}/")
    with pytest.raises(StepFailed) as info:
        run(HttpAction().run(data, make_ctx(timeout=5)))
    assert info.value.kind == "http.connect" and info.value.retryable


def test_a_hanging_server_hits_the_step_timeout():
    class Hang(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request):
            await asyncio.sleep(3600)

    with pytest.raises(StepFailed, match=r"did not finish within 0\.05s") as info:
        run(HttpAction(transport=Hang()).run(inputs(), make_ctx(timeout=0.05)))
    assert info.value.kind == "timeout" and info.value.retryable


def test_cancellation_stops_the_request():
    started = asyncio.Event()
    cancelled = []

    class Hang(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request):
            started.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.append(True)
                raise

    async def scenario():
        task = asyncio.create_task(HttpAction(transport=Hang()).run(inputs(), make_ctx()))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert cancelled == [True]


def test_redirects_are_reported_not_followed():
    rec = answer(302, headers={"Location": "https://elsewhere.example/"})
    with pytest.raises(StepFailed):
        run(
            http(rec).run(
                inputs(secret_headers={"Authorization": "T"}), make_ctx(secrets={"T": "x"})
            )
        )
    assert len(rec.requests) == 1


def test_breaker_key_is_the_host():
    assert HttpAction().breaker_key(inputs(url="https://api.example.com:8443/x")) == (
        "http:api.example.com:8443"
    )


def test_dry_run_sends_nothing_but_checks_secrets():
    rec = answer(200)
    data = inputs(secret_headers={"Authorization": "API_TOKEN"})
    result = run(http(rec).run(data, make_ctx(dry_run=True, secrets={"API_TOKEN": "t-12345"})))
    assert "dry run: would send GET" in result.log and rec.requests == []
    with pytest.raises(StepFailed, match="secret 'API_TOKEN'"):
        run(http(rec).run(data, make_ctx(dry_run=True)))
