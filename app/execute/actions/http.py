"""``http``: one HTTP request with httpx; the response becomes the step's outputs.

Outputs: ``status``, ``headers`` (lower-case names), ``body`` (text, size-capped, secrets
redacted), ``json`` (parsed body or null) and, when the body is a JSON object, each of its
top-level fields that does not clash with those names, so later steps can write
``${{ steps.create.outputs.batch_id }}``.

Every request carries ``Idempotency-Key`` (the runner's key, so the server can dedupe a repeated
attempt) and ``X-Correlation-Id`` (one id per plan run, for tracing). Secret headers are given by
secret name. Redirects are not followed: a 3xx is reported, never silently re-sent elsewhere with
our credentials.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
from pydantic import BaseModel

from app.actions.builtin import HttpInputs
from app.execute.actions._support import (
    Redactor,
    cap_text,
    deadline,
    expect_inputs,
    host_of,
    json_or_none,
    secret,
    status_failure,
    transport_failure,
)
from app.execute.actions.base import ActionContext, ActionResult, Usage

__all__ = ["MAX_BODY_CHARS", "HttpAction"]

MAX_BODY_CHARS = 1_000_000
_RESERVED = {"status", "headers", "body", "json"}


class HttpAction:
    """``transport`` is injectable (``httpx.MockTransport`` in tests); ``now`` dates Retry-After."""

    name = "http"

    def __init__(
        self,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        now: Callable[[], float] = time.time,
        user_agent: str = "plangate",
    ) -> None:
        self._transport = transport
        self._now = now
        self._user_agent = user_agent

    def breaker_key(self, inputs: BaseModel) -> str:
        return f"http:{host_of(str(getattr(inputs, 'url', '')))}"

    def headers(self, data: HttpInputs, ctx: ActionContext) -> dict[str, str]:
        """Plain headers, then secret headers, then the idempotency and correlation headers."""
        headers = {"User-Agent": self._user_agent, **data.headers}
        for header, name in data.secret_headers.items():
            headers[header] = secret(ctx, name, purpose=f"header {header}")
        headers["Idempotency-Key"] = ctx.idempotency_key
        headers["X-Correlation-Id"] = ctx.correlation_id
        return headers

    async def run(self, inputs: BaseModel, ctx: ActionContext) -> ActionResult:
        data = expect_inputs(inputs, HttpInputs, ctx)
        redact = Redactor.for_ctx(ctx)
        what = f"{data.method} {data.url}"
        headers = self.headers(data, ctx)
        if ctx.dry_run:
            return ActionResult(log=redact(f"dry run: would send {what}"))
        content: dict[str, Any] = {}
        if data.json_body is not None:
            content["json"] = data.json_body
        elif data.body is not None:
            content["content"] = data.body.encode()
        async with (
            deadline(ctx, what),
            httpx.AsyncClient(
                transport=self._transport,
                timeout=ctx.timeout if ctx.timeout > 0 else None,
                follow_redirects=False,
            ) as client,
        ):
            try:
                response = await client.request(data.method, data.url, headers=headers, **content)
            except httpx.HTTPError as exc:
                raise transport_failure(ctx, prefix="http", what=what, exc=exc) from exc
        if response.status_code not in data.expect_status:
            raise status_failure(
                ctx, prefix="http", what=what, response=response, now=self._now, redact=redact
            )
        return ActionResult(
            outputs=response_outputs(response, redact),
            usage=Usage(api_calls=1),
            log=f"{what} -> {response.status_code}",
        )


def response_outputs(response: httpx.Response, redact: Redactor) -> dict[str, Any]:
    """The outputs documented in the module docstring."""
    body, _ = cap_text(redact(response.text), MAX_BODY_CHARS)
    parsed = redact.deep(json_or_none(response))
    outputs: dict[str, Any] = {
        "status": response.status_code,
        "headers": {k.lower(): redact(v) for k, v in response.headers.items()},
        "body": body,
        "json": parsed,
    }
    if isinstance(parsed, dict):
        for key, value in parsed.items():
            if isinstance(key, str) and key not in _RESERVED:
                outputs[key] = value
    return outputs
