"""GitHub App authentication: App JWT -> installation token, cached per installation.

PyGithub's ``GithubIntegration`` with ``Auth.AppAuth`` signs the JWT and calls
``POST {GITHUB_API_URL}/app/installations/{id}/access_tokens`` (so GHES and test fakes get the
token call too). Tokens live an hour; we reuse one until ``refresh_margin`` before it expires,
one per installation, and build one ``RestTransport`` per installation on top of it.

``scoped_token`` is the other kind: a token for one executor run, never cached, restricted to
the repositories and permissions the plan declares (the same endpoint with ``repositories`` and
``permissions`` in the body), checked against what GitHub granted, and revoked at the end of
the run (``revoke_token``).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from github import Auth, Github, GithubException, GithubIntegration
from github.Requester import Requester

from app.errors import GitHubError, GitHubUnavailable
from app.github.client import HttpRetry, RestTransport, build_retrying, map_error
from app.observability import metrics

__all__ = [
    "AppCredentials",
    "InstallationTokens",
    "ScopedToken",
    "repo_installation",
    "revoke_token",
    "token_transport",
]

_LEVEL = {"read": 1, "write": 2}


@dataclass(frozen=True, slots=True)
class ScopedToken:
    """An installation token for one run. ``repr`` never shows the token."""

    token: str
    expires_at: float
    repositories: tuple[str, ...]
    permissions: Mapping[str, str]

    def __repr__(self) -> str:
        return (
            f"ScopedToken(repositories={self.repositories!r}, permissions="
            f"{dict(self.permissions)!r}, expires_at={self.expires_at})"
        )


class AppCredentials:
    """The App's id and private key, plus how to reach GitHub (base URL, write pacing)."""

    def __init__(
        self,
        *,
        app_id: int,
        private_key: str,
        base_url: str,
        seconds_between_writes: float | None = None,
        timeout: int = 15,
    ) -> None:
        self.app_id = app_id
        self.private_key = private_key
        self.base_url = base_url.rstrip("/")
        self.seconds_between_writes = seconds_between_writes
        self.timeout = timeout

    def integration(self) -> GithubIntegration:
        # retry=None: retries are ours (RestTransport), PyGithub must not sleep behind our back
        return GithubIntegration(
            auth=Auth.AppAuth(self.app_id, self.private_key),
            base_url=self.base_url,
            retry=None,
            timeout=self.timeout,
            seconds_between_requests=None,
            seconds_between_writes=None,
        )


class InstallationTokens:
    """Installation tokens and per-installation transports, cached until shortly before expiry.

    Thread-safe. ``clock`` is injected (tests move time instead of waiting an hour).
    """

    def __init__(
        self,
        credentials: AppCredentials,
        *,
        refresh_margin: float = 300.0,
        clock: Callable[[], float] = time.time,
        retry: HttpRetry | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        on_call: Callable[[str, str, int], None] | None = None,
    ) -> None:
        self.credentials = credentials
        self._integration = credentials.integration()
        self._margin = refresh_margin
        self._clock = clock
        self._retry = retry or HttpRetry()
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._on_call = on_call
        self._lock = threading.Lock()
        self._tokens: dict[int, tuple[str, float, Requester]] = {}
        self._transports: dict[int, RestTransport] = {}
        #: the App-level (JWT) transport, for /app/... endpoints such as webhook deliveries
        self.app_transport = RestTransport(
            lambda: self._integration.requester,
            retry=self._retry,
            sleep=sleep,
            clock=clock,
            rng=self._rng,
            on_call=on_call,
        )
        self.token_requests = 0

    def token(self, installation_id: int) -> str:
        return self._entry(installation_id)[0]

    def transport(self, installation_id: int) -> RestTransport:
        """The REST transport for one installation (its requester follows token refreshes)."""
        with self._lock:
            transport = self._transports.get(installation_id)
            if transport is None:
                transport = RestTransport(
                    lambda: self._entry(installation_id)[2],
                    retry=self._retry,
                    sleep=self._sleep,
                    clock=self._clock,
                    rng=self._rng,
                    on_call=self._on_call,
                )
                self._transports[installation_id] = transport
            return transport

    def scoped_token(
        self,
        installation_id: int,
        *,
        repositories: Sequence[str],
        permissions: Mapping[str, str],
    ) -> ScopedToken:
        """A fresh token for ``repositories`` (names, no owner) with exactly ``permissions``.

        ``POST /app/installations/{id}/access_tokens`` with ``repositories`` and
        ``permissions``. Not cached. Fails closed if GitHub grants a permission that was not
        asked for (or a higher level), or less than was asked.
        """
        if not repositories or not permissions:
            raise ValueError("a scoped token needs repositories and permissions")
        body = {"repositories": list(repositories), "permissions": dict(permissions)}
        try:
            data = self.app_transport.request(
                "POST", f"/app/installations/{installation_id}/access_tokens", body=body
            ).data
        except GitHubError as exc:
            if exc.status == 422:  # e.g. a repository outside the installation
                raise GitHubError(
                    f"GitHub refused a token for {', '.join(repositories)} with "
                    f"{dict(permissions)}: {exc.message}",
                    status=422,
                    hint="install the App on those repositories and grant it those permissions",
                ) from exc
            raise
        self.token_requests += 1
        granted = {k: v for k, v in dict(data.get("permissions") or {}).items() if k != "metadata"}
        asked = {k: _LEVEL.get(v, 0) for k, v in permissions.items()}
        extra = sorted(k for k, v in granted.items() if _LEVEL.get(v, 3) > asked.get(k, 0))
        short = sorted(
            k for k, v in permissions.items() if _LEVEL.get(granted.get(k, ""), 0) < _LEVEL[v]
        )
        if extra or short:
            raise GitHubError(
                f"GitHub's token does not match the plan's scope (more: {extra or 'none'}; "
                f"less: {short or 'none'}); refusing to use it",
                hint="check the App's permissions on the installation",
            )
        names = tuple(str(r.get("name")) for r in data.get("repositories") or ()) or tuple(
            repositories
        )
        wanted = {r.lower() for r in repositories}
        if data.get("repository_selection") == "all" or {n.lower() for n in names} - wanted:
            raise GitHubError(
                f"GitHub's token reaches repositories beyond {', '.join(repositories)}; "
                "refusing to use it",
                hint="check the App installation's repository access",
            )
        expires = datetime.fromisoformat(str(data["expires_at"]).replace("Z", "+00:00"))
        return ScopedToken(str(data["token"]), expires.timestamp(), names, dict(granted))

    def _entry(self, installation_id: int) -> tuple[str, float, Requester]:
        with self._lock:
            entry = self._tokens.get(installation_id)
            if entry and entry[1] - self._margin > self._clock():
                return entry
        token, expires = self._fetch(installation_id)
        requester = Github(
            auth=Auth.Token(token),
            base_url=self.credentials.base_url,
            retry=None,
            timeout=self.credentials.timeout,
            seconds_between_requests=None,
            seconds_between_writes=self.credentials.seconds_between_writes,
        ).requester
        entry = (token, expires, requester)
        with self._lock:
            self._tokens[installation_id] = entry
        return entry

    def _fetch(self, installation_id: int) -> tuple[str, float]:
        """One token request, retried like any other call (5xx, short rate limits)."""

        def once() -> tuple[str, float]:
            self.token_requests += 1
            try:
                auth = self._integration.get_access_token(installation_id)
                metrics.GITHUB_API_CALLS.labels(method="POST", status="2xx").inc()
            except GithubException as exc:
                metrics.GITHUB_API_CALLS.labels(
                    method="POST", status=f"{exc.status // 100}xx"
                ).inc()
                error = map_error(
                    exc.status, dict(exc.headers or {}), exc.data, now=self._clock()
                ) or GitHubError(f"token request failed: {exc}", status=exc.status)
                if exc.status == 404:
                    error = GitHubError(
                        f"installation {installation_id} not found (App uninstalled?)",
                        status=404,
                        hint="install the App on the repository again",
                    )
                raise error from exc
            except OSError as exc:  # requests' connection errors are OSErrors
                metrics.GITHUB_API_CALLS.labels(method="POST", status="error").inc()
                raise GitHubUnavailable(f"cannot reach GitHub for a token: {exc}") from exc
            expires = auth.expires_at
            if expires.tzinfo is None:
                expires = expires.replace(tzinfo=UTC)
            return auth.token, expires.timestamp()

        return build_retrying(self._retry, sleep=self._sleep, rng=self._rng)(once)


def token_transport(
    token: str,
    *,
    base_url: str,
    retry: HttpRetry | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> RestTransport:
    """A transport authenticated with a plain token (``GITHUB_TOKEN`` in Actions, a PAT)."""
    requester = Github(
        auth=Auth.Token(token),
        base_url=base_url.rstrip("/"),
        retry=None,
        seconds_between_requests=None,
        seconds_between_writes=None,
    ).requester
    return RestTransport(lambda: requester, retry=retry, sleep=sleep)


def revoke_token(token: str, *, base_url: str) -> None:
    """``DELETE /installation/token``: end a scoped token's life with its run (best effort)."""
    token_transport(token, base_url=base_url).request("DELETE", "/installation/token")


def repo_installation(tokens: InstallationTokens, full_name: str) -> int:
    """The App's installation id for a repository (``GET /repos/{owner}/{repo}/installation``)."""
    owner, _, name = full_name.partition("/")
    try:
        data = tokens.app_transport.request("GET", f"/repos/{owner}/{name}/installation").data
    except GitHubError as exc:
        if exc.status == 404:
            raise GitHubError(
                f"the Plangate App is not installed on {full_name}",
                status=404,
                hint="install the App on the repository (docs/github-app.md)",
            ) from exc
        raise
    return int(data["id"])
