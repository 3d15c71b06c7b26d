"""Open a pull request that adds a plan: branch, commit, pull request, all through the REST API.

This is how agents and scripts enqueue work. Who may propose for which team and environment is
policy's decision (queue ownership): ``plangate/policy`` fails a pull request whose author may
not, so this module only needs write access, not judgement.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.errors import GitHubError
from app.github.client import RepoClient
from app.plan.loader import LoadedPlan

__all__ = ["Proposal", "propose_plan"]


@dataclass(frozen=True, slots=True)
class Proposal:
    number: int
    url: str
    branch: str
    commit: str


def propose_plan(
    client: RepoClient,
    loaded: LoadedPlan,
    raw: bytes,
    *,
    repo_path: str,
    base: str | None = None,
    branch: str | None = None,
    title: str | None = None,
) -> Proposal:
    """Branch from ``base`` (default branch if None), commit the plan at ``repo_path``, open a PR.

    Five requests at most (default branch, base ref, new ref, contents, pull). The branch name
    includes the plan digest, so proposing the same plan twice fails clearly instead of
    overwriting.
    """
    plan = loaded.plan
    base = base or client.default_branch()
    branch = branch or f"plangate/{plan.id}-{loaded.digest.removeprefix('sha256:')[:12]}"
    base_sha = client.ref_sha(base)
    try:
        client.create_branch(branch, base_sha)
    except GitHubError as exc:
        if exc.status == 422:
            raise GitHubError(
                f"branch {branch!r} already exists on {client.full_name}",
                status=422,
                hint="this plan was already proposed; pass --branch NAME to propose it again",
            ) from exc
        raise
    commit = client.put_file(
        repo_path, raw, branch=branch, message=f"Propose plan {plan.id}: {plan.title}"
    )
    body = "\n".join(
        [
            f"Proposed with `plangate propose`: **{plan.title}**",
            "",
            "| | |",
            "|---|---|",
            f"| plan | `{repo_path}` |",
            f"| id | `{plan.id}` |",
            f"| team | `{plan.team}` |",
            f"| environment | `{plan.environment}` |",
            f"| digest | `{loaded.digest}` |",
            "",
            "Plangate's check runs report validation, policy, cost and approvals.",
        ]
    )
    number, url = client.create_pull(
        title=title or f"Plan {plan.id}: {plan.title}", head=branch, base=base, body=body
    )
    return Proposal(number=number, url=url, branch=branch, commit=commit)
