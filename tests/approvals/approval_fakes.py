"""FakePullContext: a pull request made of plain data, for gate tests.

One value field and one error field per ``PullContext`` method (the policy-bot habit): an error
path costs one line in a test (``ctx.reviews_error = GitHubUnavailable(...)``). Calls are
recorded so tests can check what the gate asked for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from app.approvals.context import ChangedFile, Commit, Review, ReviewState
from app.errors import GitHubError
from app.policy.requirements import Permission

HEAD = "a" * 40
OLD = "b" * 40
OLDER = "c" * 40
BASE = "d" * 40
T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def sha(char: str) -> str:
    return char * 40


@dataclass
class FakePullContext:
    author_value: str = "author"
    author_error: Exception | None = None
    head_sha_value: str = HEAD
    head_sha_error: Exception | None = None
    base_ref_value: str = "refs/heads/main"
    base_ref_error: Exception | None = None
    base_sha_value: str = BASE
    base_sha_error: Exception | None = None
    changed_files_value: list[ChangedFile] = field(
        default_factory=lambda: [ChangedFile("plans/db.yaml")]
    )
    changed_files_error: Exception | None = None
    commits_value: list[Commit] = field(
        default_factory=lambda: [Commit(sha=HEAD, author="author", committer="author")]
    )
    commits_error: Exception | None = None
    reviews_value: list[Review] = field(default_factory=list)
    reviews_error: Exception | None = None
    team_members_value: dict[str, frozenset[str]] = field(default_factory=dict)
    team_members_error: Exception | None = None
    #: login -> permission; anyone not listed has ``default_permission``
    permission_value: dict[str, Permission | None] = field(default_factory=dict)
    default_permission: Permission | None = "write"
    permission_error: Exception | None = None
    #: commit -> path -> blob sha; a commit not listed raises GitHubError(status=404)
    file_blobs_value: dict[str, dict[str, str | None]] = field(
        default_factory=lambda: {HEAD: {"plans/db.yaml": "blob1"}}
    )
    file_blobs_error: Exception | None = None
    calls: list[str] = field(default_factory=list)

    def _check(self, name: str) -> None:
        self.calls.append(name)
        error = getattr(self, f"{name}_error")
        if error is not None:
            raise error

    def author(self) -> str:
        self._check("author")
        return self.author_value

    def head_sha(self) -> str:
        self._check("head_sha")
        return self.head_sha_value

    def base_ref(self) -> str:
        self._check("base_ref")
        return self.base_ref_value

    def base_sha(self) -> str:
        self._check("base_sha")
        return self.base_sha_value

    def changed_files(self) -> Sequence[ChangedFile]:
        self._check("changed_files")
        return list(self.changed_files_value)

    def commits(self) -> Sequence[Commit]:
        self._check("commits")
        return list(self.commits_value)

    def reviews(self) -> Sequence[Review]:
        self._check("reviews")
        return list(self.reviews_value)

    def team_members(self, slug: str) -> frozenset[str]:
        self._check("team_members")
        return self.team_members_value.get(slug, frozenset())

    def permission(self, login: str) -> Permission | None:
        self._check("permission")
        return self.permission_value.get(login, self.default_permission)

    def file_blobs(self, commit_sha: str, paths: Sequence[str]) -> Mapping[str, str | None]:
        self._check("file_blobs")
        if commit_sha not in self.file_blobs_value:
            raise GitHubError(f"No commit found for SHA: {commit_sha}", status=404)
        files = self.file_blobs_value[commit_sha]
        return {p: files.get(p) for p in paths}

    # -- builders ---------------------------------------------------------------------------

    def review(
        self,
        login: str,
        state: ReviewState = "APPROVED",
        *,
        commit: str = HEAD,
        minutes: int | None = None,
    ) -> Review:
        """Append a review submitted ``minutes`` after T0 (default: after every earlier one)."""
        review_id = len(self.reviews_value) + 100
        at = T0 + timedelta(minutes=len(self.reviews_value) if minutes is None else minutes)
        review = Review(
            id=review_id,
            login=login,
            state=state,
            commit_id=commit,
            submitted_at=at,
            html_url=f"https://github.com/acme/ops/pull/7#pullrequestreview-{review_id}",
        )
        self.reviews_value.append(review)
        return review

    def approve(self, *logins: str, commit: str = HEAD) -> FakePullContext:
        for login in logins:
            self.review(login, commit=commit)
        return self
