"""Approval requirements: what the policy engine hands to the approval gate.

This is the contract between ``app.policy`` (which decides *what* approvals a plan needs, from
the base branch's policy) and ``app.approvals.gate`` (which decides whether the reviews on a pull
request satisfy them). The gate never reads policy files; everything it needs is in here,
including team membership as listed in policy.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["PERMISSION_ORDER", "AnyOf", "ApprovalRequirements", "Permission", "Requirement"]

Permission = Literal["read", "triage", "write", "maintain", "admin"]
#: GitHub repository permission levels, weakest first
PERMISSION_ORDER: tuple[Permission, ...] = ("read", "triage", "write", "maintain", "admin")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Requirement(_Frozen):
    """``count`` approvals from the listed users and/or members of the listed teams.

    Empty ``users`` and ``teams`` means "anyone with ``min_permission`` on the repository".
    ``distinct_teams`` > 1 is dual authorization: the counted approvers must come from at least
    that many different teams (of ``teams``).
    """

    id: str = Field(description="the policy rule that asked for it")
    description: str = ""
    count: int = Field(1, ge=1)
    users: tuple[str, ...] = ()
    teams: tuple[str, ...] = Field((), description="policy team names (members resolved below)")
    distinct_teams: int = Field(0, ge=0)
    min_permission: Permission = "write"
    source: str = Field("", description="file:line of the rule in policies/")


class AnyOf(_Frozen):
    """Satisfied when any one of its requirements is."""

    id: str
    any_of: tuple[Requirement, ...] = Field(min_length=1)
    source: str = ""


class ApprovalRequirements(_Frozen):
    """Everything the gate needs: every entry of ``all_of`` must be satisfied.

    An empty ``all_of`` never means "no approval needed" by accident: the policy engine always
    adds at least its default requirement, and the gate treats an empty list as *not satisfied*
    unless ``none_required`` is explicitly set by a policy rule (fail closed).
    """

    all_of: tuple[Requirement | AnyOf, ...] = ()
    none_required: bool = Field(False, description="an explicit policy rule said no approval")
    distinct_approvers: bool = Field(True, description="one person satisfies one requirement")
    excluded: dict[str, str] = Field(
        default_factory=dict, description="login -> why they may not approve (separation of duties)"
    )
    team_members: dict[str, tuple[str, ...]] = Field(
        default_factory=dict, description="policy team name -> GitHub logins"
    )
    team_slugs: dict[str, tuple[str, ...]] = Field(
        default_factory=dict, description="policy team name -> GitHub team slugs ('org/team')"
    )
