"""The pull request as the approval gate sees it: one narrow, read-only port.

Why a port: the gate (``app.approvals.gate``) decides which reviews count and must be testable
with plain data and impossible to couple to an SDK. It sees a pull request only through
``PullContext`` (the idea of palantir/policy-bot's ``pull.Context``); the GitHub adapter
(``app.github``) implements it lazily with a per-evaluation cache, ``LocalPullContext`` (here)
implements it for ``plangate explain --approved-by``, and tests use a fake made of plain data.

What this module must not do: talk to GitHub, read the environment or know about policy files.
The values below are ours (frozen dataclasses); no PyGithub object ever crosses this boundary.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

from app.policy.requirements import Permission

__all__ = [
    "LOCAL_HEAD_SHA",
    "ChangedFile",
    "Commit",
    "LocalPullContext",
    "PullContext",
    "Review",
    "ReviewState",
]

#: GitHub's pull request review states (REST ``state``). ``PENDING`` is an unsubmitted draft.
ReviewState = Literal["APPROVED", "CHANGES_REQUESTED", "COMMENTED", "DISMISSED", "PENDING"]

#: the head "commit" of a local simulation (no git involved)
LOCAL_HEAD_SHA = "0" * 40


@dataclass(frozen=True, slots=True)
class Review:
    """One submitted pull request review (GitHub REST ``pulls/{n}/reviews`` item).

    ``login`` is the reviewer (``user.login``), ``commit_id`` the head SHA the review was given
    on. A review that a maintainer dismissed has ``state == "DISMISSED"`` (GitHub rewrites the
    state of the dismissed review itself).
    """

    id: int
    login: str
    state: ReviewState
    commit_id: str
    submitted_at: datetime | None
    html_url: str = ""


@dataclass(frozen=True, slots=True)
class Commit:
    """One commit of the pull request, with the GitHub accounts behind it.

    Logins are ``None`` when git's author/committer e-mail is not linked to a GitHub account:
    the gate cannot exclude such a person by login (documented limitation in docs/approvals.md).
    ``pushed_by`` is who pushed the commit when the adapter knows it (timeline events);
    ``co_authors`` are logins resolved from ``Co-authored-by:`` trailers, when the adapter can.
    """

    sha: str
    author: str | None
    committer: str | None
    pushed_by: str | None = None
    co_authors: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ChangedFile:
    """A file the pull request changes (GitHub ``pulls/{n}/files``), relative to the merge base.

    For a rename, ``previous_filename`` is the old path: both paths are part of what the PR
    changes, so both must be identical for an earlier approval to still count.
    """

    filename: str
    status: str = "modified"
    previous_filename: str | None = None

    def paths(self) -> tuple[str, ...]:
        if self.previous_filename and self.previous_filename != self.filename:
            return (self.filename, self.previous_filename)
        return (self.filename,)


@runtime_checkable
class PullContext(Protocol):
    """Read-only view of one pull request for one evaluation.

    Ordering: ``commits()`` is oldest first; ``reviews()`` is in submission order as GitHub lists
    it, but the gate does not rely on that (it orders by ``submitted_at`` then ``id``).

    Caching: an implementation loads lazily and caches for the lifetime of the object; create a
    new context per evaluation (a webhook, a CLI call) so a re-run sees fresh data.

    Errors: every method raises ``app.errors.GitHubError`` (or a subclass: ``RateLimited``,
    ``GitHubUnavailable``) when it cannot answer. It never returns a partial list instead:
    ``commits()``, ``reviews()``, ``changed_files()`` and ``team_members()`` must raise rather
    than silently truncate (GitHub caps ``pulls/{n}/commits`` at 250 and ``pulls/{n}/files`` at
    3000), because a missing commit hides a committer and a missing file hides a change. The gate
    turns any such error into a not-satisfied result that carries the error.
    """

    def author(self) -> str:
        """Login of the pull request's author (``user.login``)."""
        ...

    def head_sha(self) -> str:
        """Full SHA of the PR head commit the evaluation is about."""
        ...

    def base_ref(self) -> str:
        """The base branch as a full ref, e.g. ``refs/heads/main``."""
        ...

    def base_sha(self) -> str:
        """SHA of the base branch tip the policy was read from."""
        ...

    def changed_files(self) -> Sequence[ChangedFile]:
        """Every file the PR changes relative to its merge base."""
        ...

    def commits(self) -> Sequence[Commit]:
        """Every commit of the PR, oldest first."""
        ...

    def reviews(self) -> Sequence[Review]:
        """Every submitted review (``PENDING`` drafts may be included; the gate ignores them)."""
        ...

    def team_members(self, slug: str) -> frozenset[str]:
        """Logins of the GitHub team ``org/team`` (child teams included, as GitHub lists them)."""
        ...

    def permission(self, login: str) -> Permission | None:
        """``login``'s permission on the repository (``collaborators/{u}/permission``).

        ``None`` means no access. ``triage``/``maintain`` come from ``role_name``.
        """
        ...

    def file_blobs(self, commit_sha: str, paths: Sequence[str]) -> Mapping[str, str | None]:
        """Git blob SHA of each path at ``commit_sha`` (``None``: the path does not exist there).

        Raises ``GitHubError`` with ``status=404`` when the commit itself is unknown (e.g. it
        was force-pushed away and garbage collected); the gate then drops approvals given on it.
        """
        ...


@dataclass(frozen=True)
class LocalPullContext:
    """A pull request that exists only in a local simulation (``plangate explain --approved-by``).

    Every approver approved the head; nobody pushed commits but the author; every approver has
    ``default_permission`` unless ``permissions`` says otherwise; ``teams`` maps GitHub team
    slugs (``org/team``) to members for policies that name slugs.
    """

    author_login: str
    reviews_: tuple[Review, ...] = ()
    teams: Mapping[str, frozenset[str]] = field(default_factory=dict)
    permissions: Mapping[str, Permission | None] = field(default_factory=dict)
    default_permission: Permission | None = "write"
    base: str = "refs/heads/main"

    def author(self) -> str:
        return self.author_login

    def head_sha(self) -> str:
        return LOCAL_HEAD_SHA

    def base_ref(self) -> str:
        return self.base

    def base_sha(self) -> str:
        return LOCAL_HEAD_SHA

    def changed_files(self) -> Sequence[ChangedFile]:
        return ()

    def commits(self) -> Sequence[Commit]:
        return (Commit(sha=LOCAL_HEAD_SHA, author=self.author_login, committer=self.author_login),)

    def reviews(self) -> Sequence[Review]:
        return self.reviews_

    def team_members(self, slug: str) -> frozenset[str]:
        return frozenset(self.teams.get(slug, frozenset()))

    def permission(self, login: str) -> Permission | None:
        lowered = {k.lower(): v for k, v in self.permissions.items()}
        return lowered.get(login.lower(), self.default_permission)

    def file_blobs(self, commit_sha: str, paths: Sequence[str]) -> Mapping[str, str | None]:
        return dict.fromkeys(paths)
