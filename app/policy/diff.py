"""The diff of *effective* rules between two policy sets (base branch vs pull request head).

Why: a pull request that edits ``policies/`` is still judged by the base policy; reviewers need
to see what the edit would change once merged, rule by rule, not as a text diff of YAML.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from app.policy.loader import PolicySet

__all__ = ["RuleChange", "diff_policy_sets"]

_LIST_SECTIONS = ("access", "rules", "approvals", "separation_of_duties", "sensitive_paths")
_DICT_SECTIONS = ("teams", "environments", "queue")
_SINGLE_SECTIONS = ("risk", "prices", "budgets")


@dataclass(frozen=True, slots=True)
class RuleChange:
    section: str
    name: str
    status: Literal["added", "removed", "changed"]
    base_source: str | None
    head_source: str | None

    def render(self) -> str:
        where = self.head_source or self.base_source or ""
        return f"{self.status:<8} {self.section}/{self.name}  ({where})"

    def to_dict(self) -> dict[str, object]:
        return {
            "section": self.section,
            "name": self.name,
            "status": self.status,
            "base_source": self.base_source,
            "head_source": self.head_source,
        }


def _entries(ps: PolicySet) -> dict[tuple[str, str], Any]:
    data = ps.document.model_dump(mode="json", by_alias=True)
    out: dict[tuple[str, str], Any] = {}
    for section in _LIST_SECTIONS:
        for item in data.get(section) or []:
            out[(section, item["id"])] = item
    for section in _DICT_SECTIONS:
        for name, item in (data.get(section) or {}).items():
            out[(section, name)] = item
    for item in data.get("signers") or []:
        out[("signers", item["name"])] = item
    for section in _SINGLE_SECTIONS:
        if data.get(section) is not None:
            out[(section, section)] = data[section]
    return out


def diff_policy_sets(base: PolicySet, head: PolicySet) -> list[RuleChange]:
    """Added, removed and changed entries, sorted by section and name."""
    b, h = _entries(base), _entries(head)
    changes: list[RuleChange] = []

    def src(ps: PolicySet, section: str, name: str) -> str | None:
        key = section if section == name else f"{section}/{name}"
        return ps.sources.get(key)

    for key in sorted(set(b) | set(h)):
        section, name = key
        if key not in b:
            changes.append(RuleChange(section, name, "added", None, src(head, section, name)))
        elif key not in h:
            changes.append(RuleChange(section, name, "removed", src(base, section, name), None))
        elif b[key] != h[key]:
            changes.append(
                RuleChange(
                    section, name, "changed", src(base, section, name), src(head, section, name)
                )
            )
    return changes
