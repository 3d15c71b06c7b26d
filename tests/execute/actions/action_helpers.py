"""Helpers for the built-in action tests: an ActionContext factory and a request recorder."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from app.execute.actions.base import ActionContext

DIGEST = "sha256:" + "ab" * 32


def make_ctx(**overrides: Any) -> ActionContext:
    values: dict[str, Any] = {
        "plan_id": "demo-plan",
        "plan_digest": DIGEST,
        "step_id": "step-1",
        "attempt": 1,
        "idempotency_key": f"{DIGEST}/step-1/1",
        "correlation_id": "corr-1234",
        "timeout": 30.0,
    }
    values.update(overrides)
    return ActionContext(**values)


@pytest.fixture
def ctx_factory() -> Callable[..., ActionContext]:
    return make_ctx


class Recorder:
    """An ``httpx.MockTransport`` handler answering from a callable and keeping every request."""

    def __init__(self, answer: Callable[[httpx.Request], httpx.Response]) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer(request)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)

    def json_bodies(self) -> list[Any]:
        return [json.loads(r.content) if r.content else None for r in self.requests]


def run(coro: Any) -> Any:
    return asyncio.run(coro)
