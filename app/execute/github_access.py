"""Which GitHub token a run gets: the repositories and permissions its plan declares.

Pure: a plan in, a ``TokenScope`` (or a list of problems) out. ``plangate execute`` mints one
installation token per run with exactly this scope (``app.github.auth.InstallationTokens.
scoped_token``), so an action can never use a repository or a permission the plan did not
declare: GitHub itself refuses the call. Checking here first turns that into a clear error
before anything runs, naming the step and its line.

- ``plan.github`` declared: that is the scope; every ``github.*`` step and compensation with a
  literal ``repo`` must be inside it (repository listed, permission declared at the level the
  action needs). A ``repo`` that is a reference is resolved at run time: GitHub enforces it.
- not declared: the scope is what the ``github.*`` steps need (their repositories, the
  permission of each action); a reference ``repo`` then needs an explicit declaration.
- no ``github.*`` step and no declaration: no token at all.

``attestation_branch_scope`` is the executor's own token, not a run's: what it needs to write
the App-only attestation branch of the repository it runs in (``contents: write`` there, and
nothing else).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from app.errors import InputError
from app.plan.model import Compensation, Plan

__all__ = ["ACTION_PERMISSIONS", "TokenScope", "attestation_branch_scope", "token_scope"]

#: what each built-in GitHub action needs (GitHub's fine-grained permission names)
ACTION_PERMISSIONS: dict[str, tuple[str, str]] = {
    "github.workflow": ("actions", "write"),  # dispatch, then read runs
    "github.pull_request": ("pull_requests", "write"),
    "github.issue": ("issues", "write"),  # open, and search earlier ones (idempotency)
}
_LEVEL = {"read": 1, "write": 2}


@dataclass(frozen=True, slots=True)
class TokenScope:
    owner: str
    #: repository *names* (the access-token endpoint takes names within the installation)
    repositories: tuple[str, ...]
    permissions: dict[str, str] = field(default_factory=dict)
    declared: bool = True

    def body(self) -> dict[str, object]:
        """The ``POST /app/installations/{id}/access_tokens`` request body."""
        return {"repositories": list(self.repositories), "permissions": dict(self.permissions)}

    def describe(self) -> str:
        perms = ", ".join(f"{k}: {v}" for k, v in sorted(self.permissions.items()))
        repos = ", ".join(f"{self.owner}/{r}" for r in self.repositories)
        return f"{repos} ({perms})"


def _uses(plan: Plan) -> list[tuple[int, str, str, object]]:
    """(step index, label, action, repo input) of every GitHub action the plan runs."""
    out: list[tuple[int, str, str, object]] = []
    for i, step in enumerate(plan.steps):
        if step.action in ACTION_PERMISSIONS:
            out.append((i, f"step '{step.id}'", step.action, step.with_.get("repo")))
        comp = step.compensate
        if isinstance(comp, Compensation) and comp.action in ACTION_PERMISSIONS:
            label = f"compensation of step '{step.id}'"
            out.append((i, label, comp.action, comp.with_.get("repo")))
    return out


def _literal(repo: object) -> str | None:
    return repo if isinstance(repo, str) and "${{" not in repo and "/" in repo else None


def token_scope(
    plan: Plan, *, path: str, line_of: Callable[[int], int | None] = lambda _i: None
) -> TokenScope | None:
    """The run's token scope, or None when the plan touches no GitHub API.

    Raises ``InputError`` listing every step outside the declared scope (or, undeclared, every
    step whose repository is not known before the run).
    """
    uses = _uses(plan)
    problems: list[str] = []

    def where(i: int) -> str:
        line = line_of(i)
        return f"{path}:{line}" if line else path

    if plan.github is None:
        if not uses:
            return None
        repos: dict[str, str] = {}
        perms: dict[str, str] = {}
        for i, label, action, repo in uses:
            literal = _literal(repo)
            if literal is None:
                problems.append(
                    f"{where(i)}: {label}: {action} targets a repository known only at run "
                    "time; declare the run's scope under `github:` (repositories, permissions)"
                )
                continue
            repos.setdefault(literal.lower(), literal)
            perm, level = ACTION_PERMISSIONS[action]
            if _LEVEL[level] > _LEVEL.get(perms.get(perm, ""), 0):
                perms[perm] = level
        owners = sorted({r.split("/", 1)[0].lower() for r in repos})
        if len(owners) > 1:
            problems.append(
                f"{path}: the github.* steps span several owners ({', '.join(owners)}); a run's "
                "token comes from one App installation"
            )
        if problems:
            raise InputError("; ".join(problems), hint="see docs/plan-format.md, 'GitHub access'")
        names = tuple(sorted(r.split("/", 1)[1] for r in repos.values()))
        owner = next(iter(repos.values())).split("/", 1)[0]
        return TokenScope(owner, names, perms, declared=False)

    declared = plan.github
    listed = {r.lower() for r in declared.repositories}
    for i, label, action, repo in uses:
        literal = _literal(repo)
        if literal is not None and literal.lower() not in listed:
            problems.append(
                f"{where(i)}: {label}: {action} on {literal}, which `github.repositories` does "
                "not list"
            )
        perm, level = ACTION_PERMISSIONS[action]
        have = declared.permissions.get(perm)  # type: ignore[call-overload]
        if _LEVEL.get(have or "", 0) < _LEVEL[level]:
            problems.append(
                f"{where(i)}: {label}: {action} needs permission {perm}: {level}, which "
                f"`github.permissions` does not declare" + (f" (it has {have})" if have else "")
            )
    if problems:
        raise InputError(
            "the plan's steps need more GitHub access than it declares: " + "; ".join(problems),
            hint="add the repository or permission under `github:` (it is part of the reviewed "
            "plan), or change the step",
        )
    owner = declared.repositories[0].split("/", 1)[0]
    names = tuple(r.split("/", 1)[1] for r in declared.repositories)
    return TokenScope(owner, names, {str(k): str(v) for k, v in declared.permissions.items()})


def attestation_branch_scope(repo: str) -> TokenScope:
    """The executor's token for the attestation branch of ``repo`` (``owner/name``): exactly
    this repository, ``contents: write`` only (git blobs, trees, commits and the branch ref)."""
    owner, _, name = repo.partition("/")
    if not owner or not name or "/" in name:
        raise ValueError(f"{repo!r} is not owner/name")
    return TokenScope(owner, (name,), {"contents": "write"})
