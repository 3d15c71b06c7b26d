"""A small GitHub REST client port for the GitHub actions, and its httpx adapter.

Why not PyGithub: it is synchronous (requests) and cannot be cancelled when the runner's timeout
fires; these three actions need five endpoints, all async. The base URL is configurable
(``https://HOST/api/v3`` for GitHub Enterprise Server). Errors become ``ActionFailed`` with the
kinds ``github.4xx`` (no retry), ``github.5xx`` and ``github.connect`` (retry), ``github.429``
and ``github.rate_limited`` (retry, with ``retry_after`` from ``Retry-After`` or
``x-ratelimit-reset``; see docs.github.com "Rate limits for the REST API").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from app.execute.actions._support import (
    Redactor,
    json_or_none,
    status_failure,
    transport_failure,
)
from app.execute.actions.base import ActionContext
from app.execute.actions.errors import ActionFailed

__all__ = [
    "API_VERSION",
    "DEFAULT_TOKEN_SECRET",
    "GitHubResponse",
    "GitHubRest",
    "HttpxGitHubRest",
]

API_VERSION = "2022-11-28"
DEFAULT_TOKEN_SECRET = "GITHUB_TOKEN"


@dataclass(frozen=True, slots=True)
class GitHubResponse:
    status: int
    data: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)


class GitHubRest(Protocol):
    """One REST call. Raises ``ActionFailed`` for any status not 2xx and not in ``accept``."""

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
        accept: Collection[int] = (),
    ) -> GitHubResponse: ...

    async def aclose(self) -> None: ...


class HttpxGitHubRest:
    """The adapter: one ``httpx.AsyncClient`` per action attempt, token as a Bearer header."""

    def __init__(
        self,
        *,
        ctx: ActionContext,
        base_url: str,
        token: str,
        transport: httpx.AsyncBaseTransport | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._ctx = ctx
        self._now = now
        self._redact = Redactor([*ctx.secrets.values(), token])
        self.calls = 0
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            transport=transport,
            timeout=ctx.timeout if ctx.timeout > 0 else None,
            follow_redirects=False,
            headers={
                "Accept": "application/vnd.github+json",
                "Authorization": f"Bearer {token}",
                "X-GitHub-Api-Version": API_VERSION,
                "User-Agent": "plangate",
                "X-Correlation-Id": ctx.correlation_id,
            },
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
        accept: Collection[int] = (),
    ) -> GitHubResponse:
        what = f"GitHub {method} {path}"
        self.calls += 1
        try:
            response = await self._client.request(method, path, json=json, params=params)
        except httpx.HTTPError as exc:
            raise transport_failure(self._ctx, prefix="github", what=what, exc=exc) from exc
        if 200 <= response.status_code < 300 or response.status_code in accept:
            return GitHubResponse(
                response.status_code, json_or_none(response), dict(response.headers)
            )
        limited = self._rate_limit(response)
        if limited is not None:
            raise ActionFailed(
                f"step '{self._ctx.step_id}': {what}: GitHub rate limit hit; retry in {limited:g}s",
                step=self._ctx.step_id,
                kind="github.rate_limited",
                retryable=True,
                retry_after=limited,
            )
        raise status_failure(
            self._ctx,
            prefix="github",
            what=what,
            response=response,
            now=self._now,
            redact=self._redact,
        )

    def _rate_limit(self, response: httpx.Response) -> float | None:
        """Seconds to wait when a 403/429 is a primary or secondary rate limit, else None."""
        if response.status_code not in (403, 429):
            return None
        headers = response.headers
        if "retry-after" in headers:
            try:
                return max(0.0, float(headers["retry-after"]))
            except ValueError:
                return 60.0
        if headers.get("x-ratelimit-remaining") == "0":
            try:
                return max(0.0, float(headers.get("x-ratelimit-reset", "0")) - self._now())
            except ValueError:
                return 60.0
        text = (json_or_none(response) or {}) if response.content else {}
        message = str(text.get("message", "")) if isinstance(text, dict) else ""
        if "secondary rate limit" in message.lower():
            return 60.0  # GitHub: wait at least one minute when no header says otherwise
        return None
