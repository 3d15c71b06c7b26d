"""``agent``: one call to an OpenAI-compatible chat-completions endpoint; tokens become usage.

Configuration comes from the wiring, never from ``os.environ`` here: the base URL from
``ctx.extra["agent_base_url"]`` (or the constructor's ``base_url``), the API key from the run's
secrets under ``ctx.extra["agent_api_key_secret"]`` (default ``OPENAI_API_KEY``). A local model
server without auth works when ``require_api_key=False``.

Request: ``POST {base_url}/chat/completions`` with ``model``, ``messages`` (optional system
message, then the prompt), ``max_tokens``, ``temperature``. Outputs: ``content``,
``finish_reason``, ``model``. ``usage.prompt_tokens``/``completion_tokens`` are recorded in
``Usage`` so budgets count what was really spent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
from pydantic import BaseModel

from app.actions.builtin import AgentInputs
from app.execute.actions._support import (
    Redactor,
    deadline,
    expect_inputs,
    host_of,
    json_or_none,
    secret,
    status_failure,
    transport_failure,
)
from app.execute.actions.base import ActionContext, ActionResult, Usage
from app.execute.actions.errors import ActionFailed

__all__ = ["DEFAULT_API_KEY_SECRET", "AgentAction"]

DEFAULT_API_KEY_SECRET = "OPENAI_API_KEY"
#: statuses whose meaning is specific to model APIs
_KINDS = {
    400: ("agent.invalid_request", False),
    404: ("agent.invalid_request", False),  # unknown model
    422: ("agent.invalid_request", False),
    401: ("agent.auth", False),
    403: ("agent.auth", False),
}


class AgentAction:
    name = "agent"

    def __init__(
        self,
        *,
        base_url: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        now: Callable[[], float] = time.time,
        require_api_key: bool = True,
    ) -> None:
        self._base_url = base_url
        self._transport = transport
        self._now = now
        self._require_api_key = require_api_key

    def breaker_key(self, inputs: BaseModel) -> str:
        host = host_of(self._base_url) if self._base_url else "default"
        return f"agent:{host}"

    def _endpoint(self, ctx: ActionContext) -> str:
        base = ctx.extra.get("agent_base_url") or self._base_url
        if not base:
            raise ActionFailed(
                f"step '{ctx.step_id}': no chat-completions endpoint is configured",
                step=ctx.step_id,
                kind="agent.config",
                retryable=False,
                hint="configure the agent base URL (e.g. https://api.openai.com/v1) for the run",
            )
        return str(base).rstrip("/") + "/chat/completions"

    @staticmethod
    def request_body(data: AgentInputs) -> dict[str, Any]:
        messages = []
        if data.system:
            messages.append({"role": "system", "content": data.system})
        messages.append({"role": "user", "content": data.prompt})
        return {
            "model": data.model,
            "messages": messages,
            "max_tokens": data.max_tokens,
            "temperature": data.temperature,
        }

    async def run(self, inputs: BaseModel, ctx: ActionContext) -> ActionResult:
        data = expect_inputs(inputs, AgentInputs, ctx)
        url = self._endpoint(ctx)
        headers = {
            "Idempotency-Key": ctx.idempotency_key,
            "X-Correlation-Id": ctx.correlation_id,
        }
        key_name = str(ctx.extra.get("agent_api_key_secret") or DEFAULT_API_KEY_SECRET)
        if self._require_api_key or key_name in ctx.secrets:
            key = secret(ctx, key_name, purpose="chat-completions API key")
            headers["Authorization"] = f"Bearer {key}"
        if ctx.dry_run:
            return ActionResult(log=f"dry run: would ask {data.model} at {url}")
        redact = Redactor.for_ctx(ctx)
        what = f"chat completion ({data.model})"
        async with (
            deadline(ctx, what),
            httpx.AsyncClient(
                transport=self._transport, timeout=ctx.timeout if ctx.timeout > 0 else None
            ) as client,
        ):
            try:
                response = await client.post(url, json=self.request_body(data), headers=headers)
            except httpx.HTTPError as exc:
                raise transport_failure(ctx, prefix="agent", what=what, exc=exc) from exc
        if response.status_code != 200:
            raise status_failure(
                ctx,
                prefix="agent",
                what=what,
                response=response,
                now=self._now,
                redact=redact,
                kinds=_KINDS,
            )
        return self._result(json_or_none(response), data, ctx)

    @staticmethod
    def _result(doc: Any, data: AgentInputs, ctx: ActionContext) -> ActionResult:
        try:
            choice = doc["choices"][0]
            content = choice["message"]["content"] or ""
            usage = doc.get("usage") or {}
            tokens_in = int(usage.get("prompt_tokens") or 0)
            tokens_out = int(usage.get("completion_tokens") or 0)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise ActionFailed(
                f"step '{ctx.step_id}': the chat-completions response has no "
                f"choices[0].message.content ({type(exc).__name__}: {exc})",
                step=ctx.step_id,
                kind="agent.bad_response",
                retryable=True,
            ) from exc
        model = str(doc.get("model") or data.model)
        finish = choice.get("finish_reason")
        return ActionResult(
            outputs={"content": content, "finish_reason": finish, "model": model},
            usage=Usage(tokens_input=tokens_in, tokens_output=tokens_out, api_calls=1, model=model),
            log=f"{model}: {tokens_in} prompt + {tokens_out} completion tokens, finish={finish}",
        )
