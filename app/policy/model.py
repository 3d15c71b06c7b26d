"""The policy format: pydantic models, strict, frozen, ``extra="forbid"``.

A policy *file* may hold any of the top-level sections below; the files of ``policies/`` are
merged into one ``PolicyDocument`` by ``app.policy.loader`` (lists are concatenated, mappings
united, a name defined twice is an error naming both places). Every field is documented with an
example in docs/policy.md.

Predicates are structured data (``environment: production``, ``paths: ["policies/**"]``,
``risk: {at_least: high}``), evaluated in plain Python by ``app.policy.predicates``: there is no
``eval`` and no expression language.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from app.cost import Limit, PriceTable, TeamBudget
from app.plan.model import ID_PATTERN, Money
from app.policy.requirements import Permission

__all__ = [
    "LEVELS",
    "AccessGrant",
    "ApprovalRule",
    "CostAtLeast",
    "EnvironmentSpec",
    "KeySigner",
    "Level",
    "Parallelism",
    "PolicyDocument",
    "Predicate",
    "QueueRights",
    "RequireSpec",
    "RiskAtLeast",
    "RiskSpec",
    "RiskWeights",
    "SafetyRule",
    "SensitivePath",
    "SeparationOfDuties",
    "SigstoreSigner",
    "Team",
]

Level = Literal["low", "medium", "high", "critical"]
LEVELS: tuple[Level, ...] = ("low", "medium", "high", "critical")


def _listify(value: Any) -> Any:
    """``environment: production`` is shorthand for ``environment: [production]``."""
    return [value] if isinstance(value, str) else value


Names = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=256)]], BeforeValidator(_listify)
]
RuleId = Annotated[str, Field(pattern=ID_PATTERN)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# -- predicates --------------------------------------------------------------------------------


class RiskAtLeast(_Model):
    at_least: Level


class CostAtLeast(_Model):
    at_least: Money


class Parallelism(_Model):
    """Matches a plan whose ``max_parallel`` is set above ``above`` (unset never matches)."""

    above: int = Field(ge=1)


class Predicate(_Model):
    """Conditions, all of which must hold (AND); a list means any of its entries (OR).

    Plan-level fields look at the plan and the change; step-level fields (``steps``,
    ``actions``, ``mutating``, ``compensated``, ``hosts``, ``commands``) make the rule apply per
    step: it matches every step for which all step-level fields hold. Globs use ``fnmatch``
    (``*`` also matches ``/``, so ``policies/**`` and ``policies/*`` both match nested files).
    """

    # plan level
    environment: Names | None = None
    team: Names | None = None
    plans: Names | None = Field(None, description="plan id globs")
    author: Names | None = Field(None, description="pull request author logins")
    paths: Names | None = Field(None, description="changed repository paths or the plan path")
    resources: Names | None = Field(None, description="globs over the plan's resources")
    risk: RiskAtLeast | None = None
    cost: CostAtLeast | None = Field(None, description="estimated plan money at least")
    canary: bool | None = Field(None, description="the plan has (true) / lacks (false) a canary")
    parallelism: Parallelism | None = None
    # step level
    steps: Names | None = Field(None, description="step id globs")
    actions: Names | None = Field(None, description="action name globs")
    mutating: bool | None = None
    compensated: bool | None = Field(
        None, description="true: the step has an undo action; false: none or `compensate: none`"
    )
    hosts: Names | None = Field(None, description="URL host globs of http/probe steps")
    commands: Names | None = Field(None, description="globs over a shell step's program, run[0]")

    STEP_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"steps", "actions", "mutating", "compensated", "hosts", "commands"}
    )

    @property
    def step_level(self) -> bool:
        return any(getattr(self, f) is not None for f in self.STEP_FIELDS)


# -- teams, environments, RBAC -----------------------------------------------------------------


class Team(_Model):
    """A team: GitHub logins and/or GitHub team slugs (``org/team``) and free-form roles."""

    members: Names = Field(default_factory=list)
    github_teams: Names = Field(default_factory=list)
    roles: Names = Field(default_factory=list)

    @model_validator(mode="after")
    def _someone(self) -> Team:
        if not self.members and not self.github_teams:
            raise ValueError("a team needs at least one member or github_teams entry")
        return self


class EnvironmentSpec(_Model):
    """A known environment and how much it adds to a plan's risk score."""

    risk: int = Field(0, ge=0, le=1000)
    description: str = ""


class AccessGrant(_Model):
    """RBAC: ``teams`` may use ``actions`` in ``environments`` on ``resources`` (all globs)."""

    id: RuleId
    description: str = ""
    teams: Names = Field(min_length=1)
    environments: Names = Field(default_factory=lambda: ["*"])
    actions: Names = Field(default_factory=lambda: ["*"])
    resources: Names = Field(default_factory=lambda: ["*"])


# -- safety rules ------------------------------------------------------------------------------


class SafetyRule(_Model):
    """``deny`` (or ``warn``) when ``when`` holds, unless ``unless`` holds."""

    id: RuleId
    description: str = ""
    effect: Literal["deny", "warn"] = "deny"
    when: Predicate
    unless: Predicate | None = None
    message: str = Field(min_length=1, description="the reason shown to the plan author")


# -- approvals ---------------------------------------------------------------------------------


class RequireSpec(_Model):
    """``count`` approvals from ``users`` and/or members of ``teams`` (empty: any writer)."""

    count: int = Field(1, ge=1, le=20)
    users: Names = Field(default_factory=list)
    teams: Names = Field(default_factory=list)
    distinct_teams: int = Field(0, ge=0, le=20, description=">1: dual authorization")
    min_permission: Permission = "write"

    @model_validator(mode="after")
    def _dual(self) -> RequireSpec:
        if self.distinct_teams > 1:
            if len(self.teams) < self.distinct_teams:
                raise ValueError("distinct_teams needs at least that many teams listed")
            if self.count < self.distinct_teams:
                raise ValueError("count must be at least distinct_teams")
        return self


class ApprovalRule(_Model):
    """When ``when`` holds, the plan needs ``require`` (or any one of ``any_of``)."""

    id: RuleId
    description: str = ""
    when: Predicate = Field(default_factory=Predicate)
    require: RequireSpec | None = None
    any_of: list[RequireSpec] | None = None

    @model_validator(mode="after")
    def _one(self) -> ApprovalRule:
        if (self.require is None) == (self.any_of is None):
            raise ValueError("give exactly one of 'require' or 'any_of'")
        if self.any_of is not None and not self.any_of:
            raise ValueError("any_of must list at least one requirement")
        return self


class SeparationOfDuties(_Model):
    """Who may not approve a change: the authors of commits touching ``paths``, listed users."""

    id: RuleId
    description: str = ""
    paths: Names = Field(min_length=1)
    exclude_path_authors: bool = True
    exclude_users: Names = Field(default_factory=list)


class SensitivePath(_Model):
    """Paths whose change raises risk (and usually approvals, via an approval rule)."""

    id: RuleId
    description: str = ""
    paths: Names = Field(min_length=1)
    risk: int = Field(0, ge=0, le=1000)


# -- risk --------------------------------------------------------------------------------------


class CostWeight(_Model):
    """``points`` per started ``per`` of estimated money, at most ``max`` points."""

    per: Money
    points: int = Field(ge=0, le=1000)
    max: int = Field(1000, ge=0, le=1000)


class RiskWeights(_Model):
    mutating_step: int = Field(0, ge=0, le=1000)
    mutating_without_compensation: int = Field(0, ge=0, le=1000)
    resource: int = Field(0, ge=0, le=1000)
    cost: CostWeight | None = None


class Thresholds(_Model):
    medium: int = Field(ge=0)
    high: int = Field(ge=0)
    critical: int = Field(ge=0)

    @model_validator(mode="after")
    def _order(self) -> Thresholds:
        if not self.medium <= self.high <= self.critical:
            raise ValueError("thresholds must satisfy medium <= high <= critical")
        return self


class RiskSpec(_Model):
    weights: RiskWeights = Field(default_factory=RiskWeights)
    thresholds: Thresholds


# -- budgets, signers, queue -------------------------------------------------------------------


class Budgets(_Model):
    """Team budgets per period; ``plan_max`` caps what any one plan may declare or estimate."""

    teams: dict[str, TeamBudget] = Field(default_factory=dict)
    plan_max: Limit | None = Field(None, description="money limits for any single plan")


class KeySigner(_Model):
    name: str = Field(min_length=1, max_length=128)
    type: Literal["key"]
    public_key: str = Field(min_length=1, description="PEM public key")

    @model_validator(mode="after")
    def _pem(self) -> KeySigner:
        if "BEGIN PUBLIC KEY" not in self.public_key:
            raise ValueError("public_key must be a PEM public key (-----BEGIN PUBLIC KEY-----)")
        return self


class SigstoreSigner(_Model):
    name: str = Field(min_length=1, max_length=128)
    type: Literal["sigstore"]
    identity: str = Field(min_length=1, description="certificate SAN, e.g. a workflow URI")
    issuer: str = Field(pattern=r"^https://", description="OIDC issuer URL")
    repository: str | None = Field(
        None,
        pattern=r"^https://",
        description="source repository URI the certificate must name (Fulcio extension "
        "1.3.6.1.4.1.57264.1.12), e.g. https://github.com/acme/ops",
    )
    repository_id: int | None = Field(
        None,
        gt=0,
        description="immutable source repository id the certificate must name (extension "
        "1.3.6.1.4.1.57264.1.15): a deleted and re-created repository gets a new id",
    )


Signer = Annotated[KeySigner | SigstoreSigner, Field(discriminator="type")]


class QueueRights(_Model):
    """Who may enqueue, retry or cancel a team's plans (users and/or policy teams)."""

    enqueue: Names = Field(default_factory=list)
    retry: Names = Field(default_factory=list)
    cancel: Names = Field(default_factory=list)


# -- the document ------------------------------------------------------------------------------


class PolicyDocument(_Model):
    """One policy file, or (after merging) the whole policy set."""

    api_version: Literal["plangate.dev/v1"] = Field("plangate.dev/v1", alias="apiVersion")
    kind: Literal["Policy"] = "Policy"
    teams: dict[str, Team] = Field(default_factory=dict)
    environments: dict[str, EnvironmentSpec] = Field(default_factory=dict)
    access: list[AccessGrant] = Field(default_factory=list)
    rules: list[SafetyRule] = Field(default_factory=list)
    approvals: list[ApprovalRule] = Field(default_factory=list)
    separation_of_duties: list[SeparationOfDuties] = Field(default_factory=list)
    sensitive_paths: list[SensitivePath] = Field(default_factory=list)
    risk: RiskSpec | None = None
    budgets: Budgets | None = None
    prices: PriceTable | None = None
    signers: list[Signer] = Field(default_factory=list)
    queue: dict[str, QueueRights] = Field(default_factory=dict)

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)
