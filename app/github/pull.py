"""``GitHubPullContext``: the approval gate's ``PullContext`` port, over ``RepoClient``.

One instance per evaluation (lazy, cached): it answers the gate's questions about one pull
request at one head SHA and turns REST items into ``app.approvals.context`` values, so no SDK
type reaches the core. Lists are never truncated silently: GitHub caps ``pulls/{n}/commits`` at
250, and a missing commit could hide a committer who must not approve, so 250 raises.

Call economy: when the pull request has no reviews (just opened), ``commits()`` answers empty
without a request: commits only serve to exclude contributors from approvals, and there are
none to exclude.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

from app.approvals.context import ChangedFile, Commit, Review
from app.errors import GitHubError, GitHubUnavailable, RateLimited
from app.github.client import ChangedFile as RestChangedFile
from app.github.client import PullRequestInfo, RepoClient
from app.github.client import Review as RestReview
from app.policy.requirements import PERMISSION_ORDER, Permission

__all__ = ["GitHubPullContext", "reviews_and_commits"]

#: GitHub's cap on ``pulls/{n}/commits``
MAX_PR_COMMITS = 250


class GitHubPullContext:
    def __init__(
        self,
        client: RepoClient,
        pull: PullRequestInfo,
        *,
        files: Sequence[RestChangedFile] | None = None,
        reviews: Sequence[RestReview] | None = None,
    ) -> None:
        """``files``/``reviews`` already fetched for this evaluation are reused, not re-fetched
        (``reviews=[]`` for a pull request that was just opened)."""
        self._client = client
        self._pull = pull
        self._files = files
        self._reviews = reviews
        self._cache: dict[str, Any] = {}

    def _memo(self, key: str, load: Any) -> Any:
        if key not in self._cache:
            self._cache[key] = load()
        return self._cache[key]

    def author(self) -> str:
        return self._pull.author

    def head_sha(self) -> str:
        return self._pull.head_sha

    def base_ref(self) -> str:
        return f"refs/heads/{self._pull.base_ref}"

    def base_sha(self) -> str:
        return self._pull.base_sha

    def changed_files(self) -> Sequence[ChangedFile]:
        files = self._files
        if files is None:
            files = self._memo("files", lambda: self._client.changed_files(self._pull.number))
        return [ChangedFile(f.path, f.status, f.previous_path) for f in files]

    def reviews(self) -> Sequence[Review]:
        return self._memo("reviews", self._load_reviews)

    def _load_reviews(self) -> list[Review]:
        out = []
        rest = self._reviews
        if rest is None:
            rest = self._client.reviews(self._pull.number)
        for r in rest:
            out.append(
                Review(
                    id=r.id,
                    login=r.user,
                    state=r.state,  # type: ignore[arg-type]
                    commit_id=r.commit_id or "",
                    submitted_at=_time(r.submitted_at),
                )
            )
        return out

    def commits(self) -> Sequence[Commit]:
        if not self.reviews():
            return []
        # the commits between two fixed commits never change: cached process-wide
        key = (self._client.full_name, self._pull.number, self._pull.head_sha, self._pull.base_sha)
        cache = self._client.cache.pr_commits
        if key not in cache:
            cache[key] = tuple(self._load_commits())
        return list(cache[key])

    def _load_commits(self) -> list[Commit]:
        items = self._client.transport.paginate(
            f"/repos/{self._client.full_name}/pulls/{self._pull.number}/commits"
        )
        if len(items) >= MAX_PR_COMMITS:
            raise GitHubError(
                f"pull request #{self._pull.number} has {MAX_PR_COMMITS} or more commits; GitHub "
                "does not list them all, so contributors cannot be excluded from approvals",
                hint="squash the pull request's commits",
            )
        return [
            Commit(
                sha=i["sha"],
                author=(i.get("author") or {}).get("login"),
                committer=(i.get("committer") or {}).get("login"),
            )
            for i in items
        ]

    def team_members(self, slug: str) -> frozenset[str]:
        org, _, team = slug.partition("/")
        if not org or not team:
            raise GitHubError(f"team {slug!r} must be written org/team")

        def load() -> frozenset[str]:
            items = self._client.transport.paginate(
                f"/orgs/{quote(org)}/teams/{quote(team)}/members"
            )
            return frozenset(i["login"] for i in items)

        return self._memo(f"team:{slug}", load)

    def permission(self, login: str) -> Permission | None:
        def load() -> Permission | None:
            try:
                data = self._client.transport.request(
                    "GET",
                    f"/repos/{self._client.full_name}/collaborators/{quote(login)}/permission",
                ).data
            except GitHubError as exc:
                if exc.status == 404:
                    return None
                raise
            role = (data or {}).get("role_name")
            perm = role if role in PERMISSION_ORDER else (data or {}).get("permission")
            return perm if perm in PERMISSION_ORDER else None

        return self._memo(f"perm:{login}", load)

    def file_blobs(self, commit_sha: str, paths: Sequence[str]) -> Mapping[str, str | None]:
        def load() -> dict[str, str]:
            data = self._client.transport.request(
                "GET",
                f"/repos/{self._client.full_name}/git/trees/{commit_sha}",
                params={"recursive": "1"},
            ).data
            if (data or {}).get("truncated"):
                raise GitHubError(f"tree of {commit_sha[:7]} is too large to list")
            return {
                e["path"]: e["sha"] for e in (data or {}).get("tree", []) if e["type"] == "blob"
            }

        tree = self._memo(f"tree:{commit_sha}", load)
        return {p: tree.get(p) for p in paths}


#: GraphQL connections give at most 100 nodes per page
GRAPHQL_PAGE = 100

#: a pull request's reviews and commits in one request (``reviews_and_commits``)
REVIEWS_AND_COMMITS_QUERY = """
query($owner: String!, $name: String!, $number: Int!) {
  repository(owner: $owner, name: $name) {
    pullRequest(number: $number) {
      headRefOid
      reviews(first: 100) {
        totalCount
        nodes { databaseId author { login } state commit { oid } submittedAt }
      }
      commits(first: 100) {
        totalCount
        nodes { commit { oid author { user { login } } committer { user { login } } } }
      }
    }
  }
}
"""


def reviews_and_commits(client: RepoClient, pull: PullRequestInfo) -> list[RestReview]:
    """The pull request's reviews, with its commits cached for ``GitHubPullContext.commits``,
    in one GraphQL request instead of two REST lists (a review event's budget).

    Used only when the answer is complete and about this head: GitHub's head is still
    ``pull.head_sha`` and neither list has more than 100 entries. Otherwise (or if GraphQL is
    refused) the REST reviews list is read and commits stay lazy, exactly as before.
    """
    key = (client.full_name, pull.number, pull.head_sha, pull.base_sha)
    if key in client.cache.pr_commits:  # commits known for this head: the reviews list only
        return client.reviews(pull.number)
    owner, _, name = client.full_name.partition("/")
    try:
        data = client.transport.graphql(
            REVIEWS_AND_COMMITS_QUERY, {"owner": owner, "name": name, "number": pull.number}
        )
        found = _parse_reviews_and_commits(data, pull)
    except (RateLimited, GitHubUnavailable):
        raise  # transient: the worker retries the delivery
    except GitHubError:
        found = None  # GraphQL refused (e.g. disabled on a GHES): the REST lists below
    if found is None:
        return client.reviews(pull.number)
    reviews, commits = found
    client.cache.pr_commits[key] = tuple(commits)
    return reviews


def _parse_reviews_and_commits(
    data: Any, pull: PullRequestInfo
) -> tuple[list[RestReview], list[Commit]] | None:
    pr = ((data or {}).get("repository") or {}).get("pullRequest")
    if not isinstance(pr, Mapping) or pr.get("headRefOid") != pull.head_sha:
        return None  # pushed since the event: let the REST path read the current state
    reviews_conn, commits_conn = pr.get("reviews") or {}, pr.get("commits") or {}
    review_nodes = [n for n in reviews_conn.get("nodes") or [] if n]
    commit_nodes = [n for n in commits_conn.get("nodes") or [] if n]
    if (
        reviews_conn.get("totalCount") != len(review_nodes)
        or commits_conn.get("totalCount") != len(commit_nodes)
        or len(review_nodes) >= GRAPHQL_PAGE
        or len(commit_nodes) >= GRAPHQL_PAGE
    ):
        return None  # more than one page: the REST lists (paginated, capped loudly)
    reviews = []
    for n in review_nodes:
        if not isinstance(n.get("databaseId"), int):
            return None
        reviews.append(
            RestReview(
                id=n["databaseId"],
                user=(n.get("author") or {}).get("login", ""),
                state=str(n.get("state", "")),
                commit_id=(n.get("commit") or {}).get("oid"),
                submitted_at=n.get("submittedAt"),
            )
        )
    commits = []
    for n in commit_nodes:
        c = n.get("commit") or {}
        commits.append(
            Commit(
                sha=str(c.get("oid", "")),
                author=((c.get("author") or {}).get("user") or {}).get("login"),
                committer=((c.get("committer") or {}).get("user") or {}).get("login"),
            )
        )
    return reviews, commits


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
