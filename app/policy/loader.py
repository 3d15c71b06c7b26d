"""Policy files → one validated, merged ``PolicySet``, or every problem at ``file:line``.

``load_policy_files`` is pure: it takes ``{path: bytes}`` (read from the working tree by
``load_policy_dir``, or from the *base* git ref by ``app.policy.git_source``) so the app and the
CLI judge plans with exactly the same code. It fails closed: no files, an empty or broken file,
an unknown team reference or a duplicate name raise ``PolicyLoadError`` — there is no "no policy
means allow".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from app.errors import Issue, PolicyLoadError
from app.plan.digest import canonical_json, sha256_hex
from app.plan.validate import field_name, pydantic_findings
from app.policy.model import (
    ApprovalRule,
    Budgets,
    KeySigner,
    PolicyDocument,
    SafetyRule,
    SigstoreSigner,
)
from app.policy.predicates import CompiledPredicate, compile_predicate
from app.yaml_source import SourceMap, read_yaml

__all__ = ["POLICY_SUFFIXES", "PolicySet", "load_policy_dir", "load_policy_files"]

POLICY_SUFFIXES = (".yaml", ".yml")
#: sections holding rules with an ``id``; ids are unique across all of them
_RULE_SECTIONS = ("access", "rules", "approvals", "separation_of_duties", "sensitive_paths")
#: sections holding named entries; a name may be defined in one file only
_NAMED_SECTIONS = ("teams", "environments", "queue")
#: sections that may appear in one file only
_SINGLE_SECTIONS = ("risk", "prices")


@dataclass(frozen=True)
class PolicySet:
    """The merged policy a decision uses, where each part came from, and its digest.

    ``sources`` maps ``"<section>/<name or id>"`` to ``file:line``; ``digest`` is
    ``sha256:<hex>`` of the RFC 8785 canonical JSON of the merged, validated document (layout,
    comments and file names do not change it; any semantic change does).
    """

    document: PolicyDocument
    sources: dict[str, str]
    files: tuple[str, ...]
    digest: str
    origin: str = "policies/"
    _compiled: dict[int, CompiledPredicate] = field(default_factory=dict, repr=False)

    def source(self, section: str, name: str) -> str:
        return self.sources.get(f"{section}/{name}", self.origin)

    def compiled(self, pred: Any) -> CompiledPredicate:
        """The compiled form of one of this set's predicates (cached per set)."""
        key = id(pred)
        found = self._compiled.get(key)
        if found is None:
            found = self._compiled[key] = compile_predicate(pred)
        return found

    @cached_property
    def compiled_rules(
        self,
    ) -> tuple[tuple[SafetyRule, CompiledPredicate, CompiledPredicate | None, str], ...]:
        """Safety rules with their predicates compiled once per set (the hot loop)."""
        return tuple(
            (
                rule,
                self.compiled(rule.when),
                self.compiled(rule.unless) if rule.unless is not None else None,
                self.source("rules", rule.id),
            )
            for rule in self.document.rules
        )

    @cached_property
    def compiled_approvals(self) -> tuple[tuple[ApprovalRule, CompiledPredicate, str], ...]:
        return tuple(
            (rule, self.compiled(rule.when), self.source("approvals", rule.id))
            for rule in self.document.approvals
        )

    @property
    def signers(self) -> tuple[KeySigner | SigstoreSigner, ...]:
        """Trusted signers of approval attestations, as plain data for the verifier."""
        return tuple(self.document.signers)

    def team_of(self, login: str) -> list[str]:
        return [name for name, t in self.document.teams.items() if login in t.members]


def _issue(
    path: str,
    source: SourceMap | None,
    data_path: tuple,
    message: str,
    code: str,
    *,
    key: bool = False,
    hint: str | None = None,
) -> Issue:
    line, col = source.locate(data_path, key=key) if source else (None, None)
    return Issue(
        path, message, code, line=line, col=col, field=field_name(data_path) or None, hint=hint
    )


def _validate_file(
    path: str, raw: bytes
) -> tuple[PolicyDocument | None, SourceMap | None, list[Issue]]:
    doc, issues = read_yaml(path, raw)
    if doc is None:
        return None, None, issues
    try:
        return PolicyDocument.model_validate(doc.data), doc.source, []
    except ValidationError as exc:
        found = []
        for f in pydantic_findings(exc, (), doc.data):
            line, col = doc.source.locate(f.path, key=f.on_key)
            found.append(
                Issue(
                    path,
                    f.message,
                    f"policy.{f.code}",
                    line=line,
                    col=col,
                    field=field_name(f.path) or None,
                    hint=f.hint,
                )
            )
        return None, doc.source, found


def load_policy_files(files: Mapping[str, bytes], *, origin: str = "policies/") -> PolicySet:
    """Validate and merge policy files (``{display path: bytes}``); raise on any problem."""
    paths = sorted(p for p in files if p.endswith(POLICY_SUFFIXES))
    if not paths:
        raise PolicyLoadError(
            [
                Issue(
                    origin,
                    "no policy files (*.yaml) found: refusing to judge plans without a policy",
                    "policy.none",
                )
            ],
            hint="add policy files to policies/ on the base branch (see docs/policy.md)",
        )
    issues: list[Issue] = []
    merged: dict[str, Any] = {s: [] for s in (*_RULE_SECTIONS, "signers")}
    merged.update({s: {} for s in _NAMED_SECTIONS})
    budgets_teams: dict[str, Any] = {}
    plan_max = None
    singles: dict[str, Any] = {}
    sources: dict[str, str] = {}

    def claim(key: str, path: str, src: SourceMap, data_path: tuple, what: str) -> bool:
        line = src.locate(data_path, key=True)[0]
        here = f"{path}:{line}" if line else path
        if key in sources:
            issues.append(
                _issue(
                    path,
                    src,
                    data_path,
                    f"{what} is already defined at {sources[key]}",
                    "policy.duplicate",
                    key=True,
                    hint="define each name once across policies/",
                )
            )
            return False
        sources[key] = here
        return True

    for path in paths:
        doc, src, found = _validate_file(path, files[path])
        issues += found
        if doc is None or src is None:
            continue
        for section in _RULE_SECTIONS:
            if getattr(doc, section) and section not in sources:
                line = src.locate((section,), key=True)[0]
                sources[section] = f"{path}:{line}" if line else path
            for i, rule in enumerate(getattr(doc, section)):
                if claim(f"rule/{rule.id}", path, src, (section, i), f"rule id '{rule.id}'"):
                    sources[f"{section}/{rule.id}"] = sources[f"rule/{rule.id}"]
                    merged[section].append(rule)
        for section in _NAMED_SECTIONS:
            for name, value in getattr(doc, section).items():
                if claim(f"{section}/{name}", path, src, (section, name), f"{section} '{name}'"):
                    merged[section][name] = value
        for i, signer in enumerate(doc.signers):
            if claim(
                f"signers/{signer.name}", path, src, ("signers", i), f"signer '{signer.name}'"
            ):
                merged["signers"].append(signer)
        for section in _SINGLE_SECTIONS:
            value = getattr(doc, section)
            if value is not None and claim(section, path, src, (section,), f"'{section}'"):
                singles[section] = value
        if doc.budgets is not None:
            line = src.locate(("budgets",), key=True)[0]
            sources.setdefault("budgets", f"{path}:{line}" if line else path)
            for team, budget in doc.budgets.teams.items():
                if claim(
                    f"budgets/{team}",
                    path,
                    src,
                    ("budgets", "teams", team),
                    f"budget of team '{team}'",
                ):
                    budgets_teams[team] = budget
            if doc.budgets.plan_max is not None:
                if plan_max is not None:
                    issues.append(
                        _issue(
                            path,
                            src,
                            ("budgets", "plan_max"),
                            "budgets.plan_max is defined twice",
                            "policy.duplicate",
                        )
                    )
                plan_max = doc.budgets.plan_max
                line = src.locate(("budgets", "plan_max"), key=True)[0]
                sources.setdefault("budgets/plan_max", f"{path}:{line}" if line else path)

    if issues:
        raise PolicyLoadError(issues)
    document = PolicyDocument.model_construct(
        **merged,
        risk=singles.get("risk"),
        prices=singles.get("prices"),
        budgets=(
            None if not budgets_teams and plan_max is None else _budgets(budgets_teams, plan_max)
        ),
    )
    _cross_check(document, sources, origin)
    digest = "sha256:" + sha256_hex(canonical_json(document.model_dump(mode="json", by_alias=True)))
    return PolicySet(document, sources, tuple(paths), digest, origin)


def _budgets(teams: dict[str, Any], plan_max: Any) -> Budgets:
    return Budgets.model_construct(teams=teams, plan_max=plan_max)


def _where(sources: dict[str, str], key: str, origin: str) -> tuple[str, int | None]:
    loc = sources.get(key, origin)
    path, _, line = loc.rpartition(":")
    if path and line.isdigit():
        return path, int(line)
    return loc, None


def _cross_check(doc: PolicyDocument, sources: dict[str, str], origin: str) -> None:
    """Names used in rules must exist; the set must be able to judge anything at all."""
    issues: list[Issue] = []
    teams = set(doc.teams)

    def unknown(key: str, what: str, name: str) -> None:
        path, line = _where(sources, key, origin)
        issues.append(
            Issue(
                path,
                f"{what} names unknown team '{name}'",
                "policy.unknown_team",
                line=line,
                hint=f"define it under teams: (known: {', '.join(sorted(teams)) or 'none'})",
            )
        )

    for grant in doc.access:
        for t in grant.teams:
            if t not in teams:
                unknown(f"access/{grant.id}", f"access grant '{grant.id}'", t)
    for rule in doc.approvals:
        specs = [rule.require] if rule.require else list(rule.any_of or [])
        for spec in specs:
            for t in spec.teams:
                if t not in teams:
                    unknown(f"approvals/{rule.id}", f"approval rule '{rule.id}'", t)
    for name in doc.queue:
        if name not in teams:
            unknown(f"queue/{name}", "queue", name)
    if doc.budgets is not None:
        for name in doc.budgets.teams:
            if name not in teams:
                unknown(f"budgets/{name}", "budgets.teams", name)
    required = [
        ("teams", bool(doc.teams)),
        ("environments", bool(doc.environments)),
        ("access", bool(doc.access)),
        ("risk", doc.risk is not None),
        ("prices", doc.prices is not None),
    ]
    for section, present in required:
        if not present:
            issues.append(
                Issue(
                    origin,
                    f"the policy set defines no '{section}': Plangate "
                    "fails closed rather than guess",
                    "policy.missing_section",
                    hint=f"add a '{section}:' section (docs/policy.md)",
                )
            )
    if issues:
        raise PolicyLoadError(issues)


def load_policy_dir(directory: str | Path) -> PolicySet:
    """Read every ``*.yaml``/``*.yml`` under ``directory`` (recursively) and load them."""
    root = Path(directory)
    display = str(directory).rstrip("/") + "/"
    if not root.exists():
        raise PolicyLoadError(
            [
                Issue(
                    display,
                    "policy directory does not exist: refusing to judge plans without a policy",
                    "policy.missing_dir",
                )
            ],
            hint="run from the repository root or pass --policies DIR",
        )
    if not root.is_dir():
        raise PolicyLoadError([Issue(display, "is not a directory", "policy.not_dir")])
    files: dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix in POLICY_SUFFIXES:
            rel = path.relative_to(root).as_posix()
            try:
                files[display + rel] = path.read_bytes()
            except OSError as exc:
                raise PolicyLoadError(
                    [Issue(display + rel, f"cannot read file: {exc.strerror}", "policy.read")]
                ) from exc
    return load_policy_files(files, origin=display)
