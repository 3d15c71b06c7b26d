"""The plan format: pydantic models, strict, frozen, ``extra="forbid"``.

A plan is a deterministic task graph. Nothing in here is evaluated at run time to change the
graph: ``${{ steps.<id>.outputs.<name> }}`` references are resolved by the executor for *values*
only, and are checked statically by ``app.plan.validate``.

Every field is documented in docs/plan-format.md; the JSON Schema (``plangate schema``) is
generated from these models. Changing a model changes every plan digest that uses the field,
so new fields must have defaults and the ``apiVersion`` must move on incompatible changes.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    WithJsonSchema,
    field_validator,
    model_serializer,
    model_validator,
)

__all__ = [
    "API_VERSION",
    "Budget",
    "BudgetLimit",
    "CacheSpec",
    "Canary",
    "Compensation",
    "Estimate",
    "GitHubAccess",
    "NoCompensation",
    "Plan",
    "RetryPolicy",
    "Step",
    "TokenEstimate",
]

API_VERSION = "plangate.dev/v1"
KIND = "Plan"

#: ids are short, ASCII, and safe in paths, refs, URLs and log lines (no unicode confusables)
ID_PATTERN = r"^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?$"
_ID_RE = re.compile(ID_PATTERN)
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_MONEY_RE = re.compile(r"^\s*\d+(?:\.\d+)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}

#: hard upper bounds keep plans reviewable and numbers exact in canonical JSON (< 2**53)
MAX_ATTEMPTS = 100
MAX_TIMEOUT_SECONDS = 7 * 24 * 3600.0
MAX_COUNT = 10**12


def _parse_duration(value: Any) -> Any:
    """``"90s"``, ``"5m"``, ``"1.5h"``, ``"250ms"`` or a number of seconds → seconds (float)."""
    if isinstance(value, bool):
        return value  # let strict validation reject it with a clear type error
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        match = _DURATION_RE.match(value)
        if not match:
            raise ValueError(
                f"'{value}' is not a duration; write e.g. 30s, 5m, 1h, 250ms or a number of seconds"
            )
        return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    return value


def _parse_money(value: Any) -> Any:
    """Money is exact: ``"12.50"`` or ``12.5`` → ``Decimal('12.5')`` (via ``str``, never binary)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and not _MONEY_RE.match(value):
        raise ValueError(f"'{value}' is not an amount of money; write e.g. \"12.50\"")
    if isinstance(value, int | float | str):
        try:
            amount = Decimal(str(value).strip())
        except InvalidOperation as exc:
            raise ValueError(f"'{value}' is not an amount of money; write e.g. \"12.50\"") from exc
        if not amount.is_finite() or amount < 0:
            raise ValueError(f"'{value}' must be a finite, non-negative amount")
        # one canonical form per amount ("2", "2.0", 2.00 → "2"), so quoting and trailing
        # zeros never change the plan digest
        return Decimal(format(amount.normalize(), "f"))
    return value


def _to_tuple(value: Any) -> Any:
    """YAML gives lists; the frozen models keep tuples (strict mode accepts only tuples)."""
    return tuple(value) if isinstance(value, list) else value


Duration = Annotated[
    float,
    BeforeValidator(_parse_duration),
    Field(ge=0, le=MAX_TIMEOUT_SECONDS),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(ms|s|m|h)?\s*$"},
            ],
            "description": "seconds, or a duration such as 250ms, 30s, 5m, 1h",
        }
    ),
]
Money = Annotated[
    Decimal,
    BeforeValidator(_parse_money),
    Field(max_digits=18, decimal_places=6),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": r"^\d+(\.\d{1,6})?$"},
            ],
            "description": 'an exact amount, e.g. "12.50"',
        }
    ),
]
Identifier = Annotated[str, Field(pattern=ID_PATTERN, min_length=1, max_length=64)]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        populate_by_name=True,
        str_strip_whitespace=False,
        validate_default=True,
    )


class RetryPolicy(_Model):
    """How a failing step is retried (names from Temporal's RetryPolicy and Step Functions).

    The delay before attempt *n* (n ≥ 2) is ``min(initial_interval * backoff_coefficient**(n-2),
    max_interval)``, then jittered. The executor never retries an error whose kind is listed in
    ``non_retryable`` or that the action itself marks non-retryable.
    """

    max_attempts: int = Field(
        3, ge=1, le=MAX_ATTEMPTS, description="total attempts, first included"
    )
    initial_interval: Duration = Field(1.0, description="delay before the first retry")
    backoff_coefficient: float = Field(2.0, ge=1.0, le=10.0, description="growth of the delay")
    max_interval: Duration = Field(60.0, description="cap on any single delay")
    jitter: Literal["full", "none"] = Field(
        "full", description="'full': uniform random delay in [0, computed] (AWS full jitter)"
    )
    non_retryable: Annotated[tuple[str, ...], BeforeValidator(_to_tuple)] = Field(
        (), description="error kinds that fail the step at once, e.g. 'http.4xx', 'timeout'"
    )

    @model_validator(mode="after")
    def _interval_order(self) -> RetryPolicy:
        if self.max_interval < self.initial_interval:
            raise ValueError("max_interval must be at least initial_interval")
        return self


class TokenEstimate(_Model):
    """Expected LLM usage of a step; priced with the policy's model price table."""

    model: str = Field(min_length=1, max_length=128, description="model name in the price table")
    input: Count = Field(0, description="expected input (prompt) tokens")
    output: Count = Field(0, description="expected output (completion) tokens")


class Estimate(_Model):
    """Cost inputs of one step; ``app.cost`` turns them into money with the policy price tables."""

    tokens: TokenEstimate | None = None
    api_calls: Count = Field(0, description="external API calls the step makes")
    runner_minutes: Annotated[float, Field(ge=0, le=10**6)] = Field(
        0.0, description="CI runner minutes"
    )
    fixed: Money | None = Field(None, description="a fixed price for the step, in money units")


class CacheSpec(_Model):
    """Reuse a previous result of the same action with the same resolved inputs within ``ttl``."""

    ttl: Duration = Field(description="how long a cached result may be reused")


class Compensation(_Model):
    """A step-shaped undo, run by the saga when a later step fails for good."""

    action: str = Field(min_length=1, max_length=128)
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    timeout: Duration = Field(300.0)


class NoCompensation(_Model):
    """An explicit statement that a mutating step has no undo, and why (policy may forbid it)."""

    none: str = Field(min_length=3, max_length=1000, description="why this step cannot be undone")


#: union tags appear in pydantic error locations; they must never collide with a YAML key, so
#: ``app.plan.validate`` can drop them when it maps an error back to a line
COMPENSATE_STEP_TAG = "<compensate: action>"
COMPENSATE_NONE_TAG = "<compensate: none>"


def _compensation_kind(value: Any) -> str:
    if isinstance(value, dict) and "none" in value:
        return COMPENSATE_NONE_TAG
    if isinstance(value, NoCompensation):
        return COMPENSATE_NONE_TAG
    return COMPENSATE_STEP_TAG


CompensateSpec = Annotated[
    Annotated[Compensation, Tag(COMPENSATE_STEP_TAG)]
    | Annotated[NoCompensation, Tag(COMPENSATE_NONE_TAG)],
    Discriminator(_compensation_kind),
]


class Step(_Model):
    """One node of the plan's task graph."""

    id: Identifier
    name: str | None = Field(None, max_length=200, description="human-readable label")
    action: str = Field(min_length=1, max_length=128, description="registered action name")
    with_: dict[str, Any] = Field(default_factory=dict, alias="with", description="action inputs")
    needs: Annotated[tuple[Identifier, ...], BeforeValidator(_to_tuple)] = Field(
        (), description="steps that must succeed first"
    )
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    timeout: Duration = Field(300.0, description="per-attempt time limit")
    mutates: bool | None = Field(
        None, description="does the step change the outside world (default: the action's)"
    )
    idempotent: bool | None = Field(
        None, description="safe to repeat after an interruption (default: the action's)"
    )
    compensate: CompensateSpec | None = None
    estimate: Estimate = Field(default_factory=Estimate)
    cache: CacheSpec | None = None

    @field_validator("needs")
    @classmethod
    def _needs_unique(cls, needs: tuple[str, ...]) -> tuple[str, ...]:
        seen: set[str] = set()
        for need in needs:
            if need in seen:
                raise ValueError(f"'{need}' is listed twice")
            seen.add(need)
        return needs


class BudgetLimit(_Model):
    """A soft limit warns; a hard limit blocks the plan (check) or stops it (execution)."""

    soft: float | None = Field(None, ge=0)
    hard: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _soft_below_hard(self) -> BudgetLimit:
        if self.soft is not None and self.hard is not None and self.soft > self.hard:
            raise ValueError("soft limit must not exceed hard limit")
        return self


class MoneyLimit(_Model):
    soft: Money | None = None
    hard: Money | None = None

    @model_validator(mode="after")
    def _soft_below_hard(self) -> MoneyLimit:
        if self.soft is not None and self.hard is not None and self.soft > self.hard:
            raise ValueError("soft limit must not exceed hard limit")
        return self


class Budget(_Model):
    """What the plan may spend. ``on_hard_limit`` says what execution does when it is reached."""

    tokens: BudgetLimit | None = None
    money: MoneyLimit | None = None
    runner_minutes: BudgetLimit | None = None
    on_hard_limit: Literal["abort", "pause"] = Field(
        "abort", description="'abort' runs compensations; 'pause' waits for a raised budget"
    )


class Canary(_Model):
    """The canary stage: ``steps`` run first, then ``analysis`` probes decide promote or abort."""

    steps: Annotated[tuple[Identifier, ...], BeforeValidator(_to_tuple)] = Field(
        min_length=1, description="steps of the canary stage"
    )
    analysis: Annotated[tuple[Identifier, ...], BeforeValidator(_to_tuple)] = Field(
        min_length=1, description="'probe' steps that judge the canary"
    )
    on_failure: Literal["abort"] = Field(
        "abort", description="abort: compensate and open an incident"
    )


#: repository permissions a plan may ask for its run's GitHub token (a subset of the App's;
#: names as GitHub's "Create an installation access token" ``permissions`` object)
GITHUB_PERMISSIONS = (
    "actions",
    "checks",
    "contents",
    "deployments",
    "environments",
    "issues",
    "pull_requests",
    "statuses",
)
GitHubPermission = Literal[
    "actions",
    "checks",
    "contents",
    "deployments",
    "environments",
    "issues",
    "pull_requests",
    "statuses",
]
_REPO_PATTERN = r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$"


class GitHubAccess(_Model):
    """The GitHub credentials the run gets: in Actions the executor mints an installation token
    for this run only, scoped to exactly these repositories and permissions."""

    repositories: Annotated[
        tuple[Annotated[str, Field(pattern=_REPO_PATTERN)], ...], BeforeValidator(_to_tuple)
    ] = Field(min_length=1, max_length=100, description="OWNER/NAME, one owner (one installation)")
    permissions: dict[GitHubPermission, Literal["read", "write"]] = Field(
        min_length=1, description="permission -> read|write, e.g. {issues: write}"
    )

    @model_validator(mode="after")
    def _one_owner(self) -> GitHubAccess:
        owners = sorted({r.split("/", 1)[0].lower() for r in self.repositories})
        if len(owners) > 1:
            raise ValueError(
                f"repositories span several owners ({', '.join(owners)}); a run's token comes "
                "from one App installation, so list repositories of one owner"
            )
        seen: set[str] = set()
        for repo in self.repositories:
            if repo.lower() in seen:
                raise ValueError(f"repository '{repo}' is listed twice")
            seen.add(repo.lower())
        return self


class Plan(_Model):
    """A reviewed, deterministic operational plan."""

    api_version: Literal["plangate.dev/v1"] = Field(alias="apiVersion")
    kind: Literal["Plan"]
    id: Identifier
    title: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=20_000)
    team: Identifier = Field(description="owning team (a team in policies/)")
    environment: Identifier = Field(description="target environment, e.g. production")
    resources: Annotated[
        tuple[Annotated[str, Field(min_length=1, max_length=256)], ...],
        BeforeValidator(_to_tuple),
    ] = Field((), description="what the plan locks while it runs, e.g. 'db/orders-primary'")
    github: GitHubAccess | None = Field(
        None,
        description="repositories and permissions of the run's GitHub token (default: what "
        "its github.* steps need)",
    )
    budget: Budget = Field(default_factory=Budget)
    max_parallel: int | None = Field(None, ge=1, le=256, description="cap on concurrent steps")
    canary: Canary | None = None
    steps: Annotated[tuple[Step, ...], BeforeValidator(_to_tuple)] = Field(
        min_length=1, max_length=20_000
    )

    @model_serializer(mode="wrap")
    def _omit_unset_github(self, handler: Any) -> Any:
        # a plan without a ``github`` block dumps (and so digests) exactly as before the field
        # existed: adding it must not invalidate every approval already signed
        data = handler(self)
        if self.github is None and isinstance(data, dict):
            data.pop("github", None)
        return data

    def step(self, step_id: str) -> Step:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    def step_index(self) -> dict[str, Step]:
        return {step.id: step for step in self.steps}


def is_identifier(value: str) -> bool:
    return bool(_ID_RE.match(value))
