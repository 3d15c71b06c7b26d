"""Small helpers shared by the built-in actions: deadlines, redaction, capping, HTTP errors.

Kept private: the kinds produced here are the public contract (docs/actions.md), not the code.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from app.errors import StepFailed
from app.execute.actions.base import ActionContext
from app.execute.actions.errors import ActionFailed

T = TypeVar("T", bound=BaseModel)

REDACTED = "***"
#: how much of a remote error body goes into a message (enough to diagnose, not a dump)
ERROR_BODY_CHARS = 500
#: ``ActionResult.log`` is for people; the full (capped) output is in the outputs
LOG_CHARS = 65_536


def expect_inputs(inputs: BaseModel, model: type[T], ctx: ActionContext) -> T:
    """The runner hands us the validated model; anything else is a wiring bug, not retryable."""
    if isinstance(inputs, model):
        return inputs
    raise ActionFailed(
        f"step '{ctx.step_id}': expected {model.__name__}, got {type(inputs).__name__}",
        step=ctx.step_id,
        kind="action.bad_inputs",
        retryable=False,
    )


@asynccontextmanager
async def deadline(ctx: ActionContext, what: str) -> AsyncIterator[None]:
    """Bound the attempt by ``ctx.timeout``; expiry becomes ``StepFailed(kind='timeout')``.

    The runner may also cancel us; ``asyncio.timeout`` only converts its *own* expiry, so an
    outer cancellation still propagates as ``CancelledError``.
    """
    try:
        async with asyncio.timeout(ctx.timeout if ctx.timeout > 0 else None):
            yield
    except TimeoutError as exc:
        raise ActionFailed(
            f"step '{ctx.step_id}': {what} did not finish within {ctx.timeout:g}s",
            step=ctx.step_id,
            kind="timeout",
            retryable=True,
            hint="raise the step's timeout if the work is legitimately slow",
        ) from exc


def secret(ctx: ActionContext, name: str, *, purpose: str) -> str:
    """A secret by name from the run's secrets; missing is a configuration error (no retry)."""
    value = ctx.secrets.get(name)
    if not value:
        raise ActionFailed(
            f"step '{ctx.step_id}': secret '{name}' ({purpose}) is not available to this run",
            step=ctx.step_id,
            kind="secret.missing",
            retryable=False,
            hint=f"provide the secret '{name}' to the run (it is passed by name, never in a plan)",
        )
    return value


class Redactor:
    """Replaces every secret value of the run with ``***``: longest first, so overlaps go too."""

    def __init__(self, values: Iterable[str]) -> None:
        self._values = sorted({v for v in values if v}, key=len, reverse=True)

    @classmethod
    def for_ctx(cls, ctx: ActionContext) -> Redactor:
        return cls(ctx.secrets.values())

    def __call__(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, REDACTED)
        return text

    def deep(self, value: Any) -> Any:
        """Redact every string inside parsed JSON (keys included)."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, list):
            return [self.deep(v) for v in value]
        if isinstance(value, dict):
            return {self.deep(k): self.deep(v) for k, v in value.items()}
        return value


def cap_text(text: str, limit: int) -> tuple[str, bool]:
    """At most ``limit`` characters; says whether something was cut."""
    if len(text) <= limit:
        return text, False
    return text[:limit], True


def retry_after_seconds(headers: httpx.Headers, now: Callable[[], float]) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP-date, RFC 9110 §10.2.3)."""
    raw = headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - now()
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)


def status_failure(
    ctx: ActionContext,
    *,
    prefix: str,
    what: str,
    response: httpx.Response,
    now: Callable[[], float],
    redact: Redactor,
    kinds: Mapping[int, tuple[str, bool]] | None = None,
) -> ActionFailed:
    """Classify an unwanted HTTP status: 4xx is the caller's fault (no retry) except 408/429;
    5xx is the server's (retry). ``kinds`` overrides single statuses (e.g. 400 for agents)."""
    status = response.status_code
    if kinds and status in kinds:
        kind, retryable = kinds[status]
    elif status in (408, 429):
        kind, retryable = f"{prefix}.{status}", True
    elif 400 <= status < 500:
        kind, retryable = f"{prefix}.4xx", False
    elif status >= 500:
        kind, retryable = f"{prefix}.5xx", True
    else:
        kind, retryable = f"{prefix}.unexpected_status", False
    body, _ = cap_text(redact(_safe_text(response)), ERROR_BODY_CHARS)
    detail = f": {body}" if body.strip() else ""
    return ActionFailed(
        f"step '{ctx.step_id}': {what} answered HTTP {status}{detail}",
        step=ctx.step_id,
        kind=kind,
        retryable=retryable,
        retry_after=retry_after_seconds(response.headers, now),
        outputs={"status": status},
    )


def transport_failure(
    ctx: ActionContext, *, prefix: str, what: str, exc: httpx.HTTPError
) -> StepFailed:
    """Network-level failures: connect errors and timeouts are retryable, like 5xx."""
    if isinstance(exc, httpx.TimeoutException):
        kind = "timeout"
    elif isinstance(exc, httpx.ConnectError):
        kind = f"{prefix}.connect"
    else:
        kind = f"{prefix}.transport"
    return ActionFailed(
        f"step '{ctx.step_id}': {what} failed: {type(exc).__name__}: {exc}",
        step=ctx.step_id,
        kind=kind,
        retryable=True,
    )


def _safe_text(response: httpx.Response) -> str:
    try:
        return response.text
    except (UnicodeDecodeError, httpx.ResponseNotRead):
        return ""


def json_or_none(response: httpx.Response) -> Any:
    """The body as JSON when it is JSON, else ``None`` (never raises)."""
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def host_of(url: str) -> str:
    """The host (and port) of a URL, for breaker keys; a reference yet unresolved stays as is."""
    try:
        return httpx.URL(url).netloc.decode() or url
    except (httpx.InvalidURL, TypeError):
        return url
