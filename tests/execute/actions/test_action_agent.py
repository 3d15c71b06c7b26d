"""``agent``: OpenAI-compatible chat completions; configuration from the context, usage recorded."""

from __future__ import annotations

import json

import httpx
import pytest
from action_helpers import Recorder, make_ctx, run

from app.actions.builtin import AgentInputs
from app.errors import StepFailed
from app.execute.actions.agent import AgentAction
from app.execute.actions.errors import ActionFailed

# The response shape documented for POST /v1/chat/completions (OpenAI API reference).
COMPLETION = {
    "id": "chatcmpl-123",
    "object": "chat.completion",
    "created": 1677652288,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello there."},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21},
}

SECRETS = {"OPENAI_API_KEY": "sk-test-abcdef"}
EXTRA = {"agent_base_url": "https://llm.example/v1/"}


def agent(rec: Recorder, **kwargs) -> AgentAction:
    return AgentAction(transport=rec.transport(), now=lambda: 0.0, **kwargs)


def inputs(**kwargs) -> AgentInputs:
    kwargs.setdefault("model", "gpt-4o-mini")
    kwargs.setdefault("prompt", "Say hello")
    return AgentInputs(**kwargs)


def test_request_shape_and_usage():
    rec = Recorder(lambda r: httpx.Response(200, json=COMPLETION))
    ctx = make_ctx(secrets=SECRETS, extra=EXTRA)
    result = run(agent(rec).run(inputs(system="Be brief.", max_tokens=50), ctx))
    request = rec.requests[0]
    assert str(request.url) == "https://llm.example/v1/chat/completions"
    assert request.headers["Authorization"] == "Bearer sk-test-abcdef"
    assert request.headers["Idempotency-Key"] == ctx.idempotency_key
    assert json.loads(request.content) == {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hello"},
        ],
        "max_tokens": 50,
        "temperature": 0.0,
    }
    assert result.outputs["content"] == "Hello there."
    assert result.outputs["finish_reason"] == "stop"
    assert result.usage.tokens_input == 9 and result.usage.tokens_output == 12
    assert result.usage.model == "gpt-4o-mini-2024-07-18" and result.usage.api_calls == 1


def test_api_key_is_never_read_from_the_process_environment(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    rec = Recorder(lambda r: httpx.Response(200, json=COMPLETION))
    with pytest.raises(StepFailed, match="secret 'OPENAI_API_KEY'") as info:
        run(agent(rec).run(inputs(), make_ctx(extra=EXTRA)))
    assert info.value.kind == "secret.missing" and rec.requests == []


def test_key_secret_name_and_base_url_are_configurable():
    rec = Recorder(lambda r: httpx.Response(200, json=COMPLETION))
    ctx = make_ctx(secrets={"LLM_KEY": "k-999999"}, extra={"agent_api_key_secret": "LLM_KEY"})
    run(agent(rec, base_url="http://127.0.0.1:11434/v1").run(inputs(), ctx))
    assert str(rec.requests[0].url) == "http://127.0.0.1:11434/v1/chat/completions"
    assert rec.requests[0].headers["Authorization"] == "Bearer k-999999"


def test_local_server_without_a_key():
    rec = Recorder(lambda r: httpx.Response(200, json=COMPLETION))
    action = agent(rec, base_url="http://127.0.0.1:8000/v1", require_api_key=False)
    run(action.run(inputs(), make_ctx()))
    assert "Authorization" not in rec.requests[0].headers


def test_no_endpoint_configured_is_a_config_error():
    with pytest.raises(StepFailed, match="no chat-completions endpoint") as info:
        run(AgentAction().run(inputs(), make_ctx(secrets=SECRETS)))
    assert info.value.kind == "agent.config" and not info.value.retryable


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [
        (400, "agent.invalid_request", False),
        (404, "agent.invalid_request", False),
        (401, "agent.auth", False),
        (429, "agent.429", True),
        (500, "agent.5xx", True),
    ],
)
def test_error_classification(status, kind, retryable):
    error = {"error": {"message": "boom", "type": "invalid_request_error"}}
    rec = Recorder(lambda r: httpx.Response(status, json=error, headers={"Retry-After": "3"}))
    with pytest.raises(ActionFailed) as info:
        run(agent(rec).run(inputs(), make_ctx(secrets=SECRETS, extra=EXTRA)))
    assert (info.value.kind, info.value.retryable) == (kind, retryable)
    assert info.value.retry_after == 3.0


def test_response_without_content_is_reported():
    rec = Recorder(lambda r: httpx.Response(200, json={"choices": []}))
    with pytest.raises(StepFailed, match=r"no choices\[0\].message.content") as info:
        run(agent(rec).run(inputs(), make_ctx(secrets=SECRETS, extra=EXTRA)))
    assert info.value.kind == "agent.bad_response"


def test_missing_usage_records_zero_tokens():
    body = {**COMPLETION}
    del body["usage"]
    rec = Recorder(lambda r: httpx.Response(200, json=body))
    result = run(agent(rec).run(inputs(), make_ctx(secrets=SECRETS, extra=EXTRA)))
    assert (result.usage.tokens_input, result.usage.tokens_output) == (0, 0)
