"""Input models of the built-in actions.

These models are what ``plangate check`` validates each step's ``with:`` against, and what the
JSON Schema offers editors. Execution lives in the executor; this module only says what an action
accepts and whether it changes the outside world.

String inputs may hold ``${{ steps.<id>.outputs.<name> }}`` references (resolved at run time, for
values only). Secrets are never written in a plan: actions take secret *names*.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "AgentInputs",
    "GitHubIssueInputs",
    "GitHubPullRequestInputs",
    "GitHubWorkflowInputs",
    "HttpInputs",
    "NoopInputs",
    "ProbeInputs",
    "ShellInputs",
]

_REPO = r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$"
_SECRET_NAME = r"^[A-Z][A-Z0-9_]{0,127}$"
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"


class _Inputs(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)


class NoopInputs(_Inputs):
    """Does nothing; useful for structure, tests and dry runs. ``outputs`` are echoed back."""

    message: str = ""
    outputs: dict[str, str] = Field(default_factory=dict)
    fail_times: int = Field(0, ge=0, le=100, description="fail this many attempts first (drills)")


class ShellInputs(_Inputs):
    """Run a program. ``run`` is an argv list: no shell, no string interpolation of inputs."""

    run: list[str] = Field(
        min_length=1, max_length=1000, description="argv, e.g. [kubectl, get, pods]"
    )
    env: dict[str, str] = Field(default_factory=dict, description="extra environment variables")
    secret_env: dict[str, str] = Field(
        default_factory=dict, description="ENV_VAR: SECRET_NAME, filled from the run's secrets"
    )
    cwd: str | None = Field(None, max_length=1024)
    max_output_bytes: int = Field(1_000_000, ge=1, le=64_000_000)

    @model_validator(mode="after")
    def _names(self) -> ShellInputs:
        import re

        for name in (*self.env, *self.secret_env):
            if not re.match(_ENV_NAME, name):
                raise ValueError(f"'{name}' is not a valid environment variable name")
        for secret in self.secret_env.values():
            if not re.match(_SECRET_NAME, secret):
                raise ValueError(f"'{secret}' is not a valid secret name (UPPER_SNAKE_CASE)")
        if not self.run[0].strip():
            raise ValueError("run[0] (the program) must not be empty")
        return self


class HttpInputs(_Inputs):
    """One HTTP request. Headers that carry secrets are given by secret name."""

    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    url: str = Field(pattern=r"^(https?://|\$\{\{)", max_length=4096)
    headers: dict[str, str] = Field(default_factory=dict)
    secret_headers: dict[str, str] = Field(
        default_factory=dict, description="Header-Name: SECRET_NAME"
    )
    json_body: Any = Field(None, alias="json")
    body: str | None = None
    expect_status: list[int] = Field(default_factory=lambda: [200, 201, 202, 204], min_length=1)

    @model_validator(mode="after")
    def _one_body(self) -> HttpInputs:
        if self.json_body is not None and self.body is not None:
            raise ValueError("give either 'json' or 'body', not both")
        return self


class GitHubWorkflowInputs(_Inputs):
    """Dispatch a GitHub Actions workflow (``workflow_dispatch``) and optionally wait for it."""

    repo: str = Field(pattern=_REPO)
    workflow: str = Field(min_length=1, description="workflow file name (deploy.yml) or id")
    ref: str = Field("main", min_length=1)
    inputs: dict[str, str] = Field(default_factory=dict)
    wait: bool = True
    poll_interval: int = Field(10, ge=1, le=600, description="seconds between status polls")


class GitHubPullRequestInputs(_Inputs):
    """Open a pull request from an existing branch."""

    repo: str = Field(pattern=_REPO)
    title: str = Field(min_length=1, max_length=256)
    body: str = ""
    head: str = Field(min_length=1)
    base: str = Field("main", min_length=1)
    draft: bool = False


class GitHubIssueInputs(_Inputs):
    """Open an issue (e.g. a change record or an incident)."""

    repo: str = Field(pattern=_REPO)
    title: str = Field(min_length=1, max_length=256)
    body: str = ""
    labels: list[str] = Field(default_factory=list)


class AgentInputs(_Inputs):
    """Call an OpenAI-compatible chat-completions endpoint; token usage is recorded."""

    model: str = Field(min_length=1, max_length=128)
    prompt: str = Field(min_length=1)
    system: str | None = None
    max_tokens: int = Field(1024, ge=1, le=1_000_000)
    temperature: float = Field(0.0, ge=0.0, le=2.0)


class ProbeHttp(_Inputs):
    url: str = Field(pattern=r"^(https?://|\$\{\{)")
    json_path: str = Field(
        min_length=1, description="dotted path to a number, e.g. data.error_rate"
    )


class ProbePrometheus(_Inputs):
    url: str = Field(pattern=r"^(https?://|\$\{\{)", description="Prometheus base URL")
    query: str = Field(min_length=1, description="PromQL instant query returning one number")


class ProbeThresholds(_Inputs):
    """A sample fails when it breaks any threshold (Argo Rollouts' successCondition, as data)."""

    max_value: float | None = None
    min_value: float | None = None
    max_error_rate: float | None = Field(None, ge=0, le=1)
    min_success_rate: float | None = Field(None, ge=0, le=1)
    max_latency_ms: float | None = Field(None, ge=0)


class ProbeInputs(_Inputs):
    """Measure a metric several times; fail when more than ``failure_limit`` samples fail."""

    http: ProbeHttp | None = None
    prometheus: ProbePrometheus | None = None
    metric: Literal["value", "error_rate", "success_rate", "latency_ms"] = "value"
    samples: int = Field(3, ge=1, le=1000)
    interval: int = Field(10, ge=0, le=3600, description="seconds between samples")
    failure_limit: int = Field(0, ge=0, description="failed samples tolerated")
    thresholds: ProbeThresholds

    @model_validator(mode="after")
    def _one_source(self) -> ProbeInputs:
        if (self.http is None) == (self.prometheus is None):
            raise ValueError("give exactly one of 'http' or 'prometheus'")
        if self.failure_limit >= self.samples:
            raise ValueError("failure_limit must be below samples, or the probe can never fail")
        if all(v is None for v in self.thresholds.model_dump().values()):
            raise ValueError("thresholds: give at least one threshold")
        return self
