"""The action registry: which actions exist, what inputs they take, whether they mutate.

Built-ins are registered here; third-party actions register through the ``plangate.actions``
entry-point group, each entry point (named like the action) resolving to an ``ActionSpec`` (or a
zero-argument callable returning one). A plugin that fails to load never breaks plans that do
not use it: the failure is kept and reported when a plan names that action.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel

from app.actions import builtin

__all__ = ["ENTRY_POINT_GROUP", "ActionRegistry", "ActionSpec", "default_registry"]

ENTRY_POINT_GROUP = "plangate.actions"


@dataclass(frozen=True, slots=True)
class ActionSpec:
    """What the core needs to know about an action.

    ``mutates`` is the default for steps using the action; when ``mutates_fixed`` is set a step
    may not declare otherwise (an issue is always opened, a probe never changes anything).
    ``idempotent`` says whether an interrupted attempt may be repeated without a human.
    ``run`` is the executor's implementation, optional here so that checking needs no I/O code.
    """

    name: str
    inputs: type[BaseModel]
    mutates: bool
    idempotent: bool
    summary: str
    mutates_fixed: bool = False
    run: Callable[..., Any] | None = field(default=None, compare=False)


BUILTINS: tuple[ActionSpec, ...] = (
    ActionSpec("noop", builtin.NoopInputs, mutates=False, idempotent=True, mutates_fixed=True,
               summary="does nothing; echoes its outputs"),
    ActionSpec("shell", builtin.ShellInputs, mutates=True, idempotent=False,
               summary="run a program from an argv list"),
    ActionSpec("http", builtin.HttpInputs, mutates=True, idempotent=False,
               summary="one HTTP request"),
    ActionSpec("github.workflow", builtin.GitHubWorkflowInputs, mutates=True, idempotent=False,
               summary="dispatch a GitHub Actions workflow and wait for it"),
    ActionSpec("github.pull_request", builtin.GitHubPullRequestInputs, mutates=True,
               idempotent=True, mutates_fixed=True, summary="open a pull request"),
    ActionSpec("github.issue", builtin.GitHubIssueInputs, mutates=True, idempotent=True,
               mutates_fixed=True, summary="open an issue"),
    ActionSpec("agent", builtin.AgentInputs, mutates=False, idempotent=True,
               summary="call an OpenAI-compatible chat-completions endpoint"),
    ActionSpec("probe", builtin.ProbeInputs, mutates=False, idempotent=True, mutates_fixed=True,
               summary="sample a metric and judge it against thresholds"),
)  # fmt: skip


class ActionRegistry:
    """Name → ``ActionSpec``. Immutable after construction; build a new one to add actions."""

    def __init__(
        self, specs: Iterable[ActionSpec], *, load_errors: dict[str, str] | None = None
    ) -> None:
        self._specs: dict[str, ActionSpec] = {}
        for spec in specs:
            if spec.name in self._specs:
                raise ValueError(f"action '{spec.name}' is registered twice")
            self._specs[spec.name] = spec
        self.load_errors = dict(load_errors or {})

    def get(self, name: str) -> ActionSpec | None:
        return self._specs.get(name)

    def names(self) -> list[str]:
        return sorted(self._specs)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[ActionSpec]:
        return iter(self._specs[n] for n in self.names())

    @classmethod
    def builtins(cls) -> ActionRegistry:
        return cls(BUILTINS)

    @classmethod
    def with_plugins(cls, extra: Iterable[ActionSpec] = ()) -> ActionRegistry:
        """Built-ins plus everything registered under the ``plangate.actions`` entry points."""
        specs = list(BUILTINS) + list(extra)
        errors: dict[str, str] = {}
        taken = {s.name for s in specs}
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                loaded = ep.load()
                spec = (
                    loaded() if callable(loaded) and not isinstance(loaded, ActionSpec) else loaded
                )
                if not isinstance(spec, ActionSpec):
                    raise TypeError(f"entry point gave {type(spec).__name__}, not ActionSpec")
                if spec.name != ep.name:
                    # the entry point's name is how a plan finds a broken plugin's error
                    raise ValueError(
                        f"entry point '{ep.name}' gives action '{spec.name}'; the names must match"
                    )
                if not (isinstance(spec.inputs, type) and issubclass(spec.inputs, BaseModel)):
                    raise TypeError("ActionSpec.inputs must be a pydantic model class")
            except Exception as exc:  # a broken plugin must not break unrelated plans
                errors[ep.name] = f"{type(exc).__name__}: {exc}"
                continue
            if spec.name in taken:
                errors[spec.name] = f"plugin '{ep.value}' reuses the name of an existing action"
                continue
            taken.add(spec.name)
            specs.append(spec)
        return cls(specs, load_errors=errors)


_DEFAULT: ActionRegistry | None = None


def default_registry() -> ActionRegistry:
    """The process-wide registry (built-ins + plugins), loaded once."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = ActionRegistry.with_plugins()
    return _DEFAULT
