"""Wiring of action implementations: the built-ins and plugin implementations.

``builtin_implementations(**deps)`` wires the built-ins with their dependencies (keyword-only,
all optional: transports, sleep, clocks, base URLs, the child environment for ``shell``).
``implementations(registry, **deps)`` adds plugins: an ``ActionSpec`` from the
``plangate.actions`` entry point may carry ``run``, either an object implementing the ``Action``
protocol or a zero-argument factory returning one. A broken plugin implementation is reported
by name and never breaks plans that do not use it (same rule as the registry).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import httpx

from app.actions.registry import ActionRegistry, default_registry
from app.execute.actions.agent import AgentAction
from app.execute.actions.base import Action
from app.execute.actions.github import (
    ClientFactory,
    GitHubIssueAction,
    GitHubPullRequestAction,
    GitHubWorkflowAction,
    default_client_factory,
)
from app.execute.actions.http import HttpAction
from app.execute.actions.noop import NoopAction
from app.execute.actions.probe import ProbeAction
from app.execute.actions.shell import ShellAction
from app.settings import DEFAULT_API_URL, Settings

__all__ = ["Implementations", "builtin_implementations", "implementations", "settings_deps"]


def builtin_implementations(
    *,
    base_env: Mapping[str, str] | None = None,
    http_transport: httpx.AsyncBaseTransport | None = None,
    github_api_url: str = DEFAULT_API_URL,
    github_transport: httpx.AsyncBaseTransport | None = None,
    github_client_factory: ClientFactory | None = None,
    github_token_secret: str = "GITHUB_TOKEN",
    github_return_run_details: bool = True,
    agent_base_url: str | None = None,
    agent_transport: httpx.AsyncBaseTransport | None = None,
    agent_require_api_key: bool = True,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    now: Callable[[], float] = time.time,
) -> dict[str, Action]:
    """Name -> implementation for every built-in action.

    ``base_env`` is the environment ``shell`` children may inherit from (only allow-listed
    variables are taken); the CLI passes the process environment, tests pass a dict.
    ``http_transport`` also serves ``probe``; ``agent_transport`` defaults to it.
    """
    factory = github_client_factory or default_client_factory(
        api_url=github_api_url,
        transport=github_transport,
        token_secret=github_token_secret,
        now=now,
    )
    actions: list[Action] = [
        NoopAction(),
        ShellAction(base_env=base_env),
        HttpAction(transport=http_transport, now=now),
        ProbeAction(transport=http_transport, sleep=sleep),
        AgentAction(
            base_url=agent_base_url,
            transport=agent_transport or http_transport,
            now=now,
            require_api_key=agent_require_api_key,
        ),
        GitHubWorkflowAction(
            client_factory=factory, sleep=sleep, return_run_details=github_return_run_details
        ),
        GitHubPullRequestAction(client_factory=factory),
        GitHubIssueAction(client_factory=factory),
    ]
    return {action.name: action for action in actions}


def settings_deps(settings: Settings) -> dict[str, object]:
    """The dependencies that come from configuration (``GITHUB_API_URL``,
    ``PLANGATE_AGENT_BASE_URL``): ``implementations(registry, **settings_deps(s), base_env=...)``.
    """
    return {"github_api_url": settings.github_api_url, "agent_base_url": settings.agent_base_url}


@dataclass(frozen=True, slots=True)
class Implementations:
    """Every runnable action, and why some registered actions cannot run."""

    actions: dict[str, Action]
    errors: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> Action | None:
        return self.actions.get(name)


def _is_action(obj: object) -> bool:
    """An object (not a class: a class is a factory) with ``name``, ``run``, ``breaker_key``."""
    if isinstance(obj, type):
        return False
    return all(callable(getattr(obj, attr, None)) for attr in ("run", "breaker_key")) and (
        isinstance(getattr(obj, "name", None), str)
    )


def implementations(registry: ActionRegistry | None = None, **deps: object) -> Implementations:
    """Built-ins (wired with ``deps``) plus the plugin implementations the registry carries.

    A registered action without an implementation, or whose factory fails or returns something
    that is not an ``Action`` named like the spec, is listed in ``errors``; the runner reports it
    when a plan uses that action.
    """
    registry = registry or default_registry()
    actions = builtin_implementations(**deps)  # type: ignore[arg-type]
    errors = dict(registry.load_errors)
    for spec in registry:
        if spec.name in actions:
            continue
        if spec.run is None:
            errors[spec.name] = "the plugin registers no implementation (ActionSpec.run is None)"
            continue
        try:
            impl = spec.run if _is_action(spec.run) else spec.run()
            if not _is_action(impl):
                raise TypeError(
                    f"got {type(impl).__name__}, not an Action (name, run, breaker_key)"
                )
            if impl.name != spec.name:
                raise ValueError(f"implementation is named '{impl.name}', not '{spec.name}'")
        except Exception as exc:  # a broken plugin must not break unrelated plans
            errors[spec.name] = f"{type(exc).__name__}: {exc}"
            continue
        actions[spec.name] = impl
    return Implementations(actions=actions, errors=errors)
