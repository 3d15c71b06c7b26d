"""``GitHubPullContext``: the approval gate's port over REST, against the fake GitHub."""

from __future__ import annotations

import pytest
import responses
from ghfake import FakeGitHub, Pull, git_blob_sha

from app.approvals.context import PullContext
from app.errors import GitHubError
from app.github.auth import AppCredentials, InstallationTokens
from app.github.client import GitHubCache, HttpRetry, PullRequestInfo, RepoClient
from app.github.pull import GitHubPullContext

API = "https://api.github.com"
REPO = "octo/ops"


@pytest.fixture
def world(app_key):
    fake = FakeGitHub(API)
    repo = fake.repo(REPO)
    base = repo.commit({"a.txt": "1"}, branch="main")
    head = repo.commit({"a.txt": "2", "plans/x.yaml": "id: x\n"})
    repo.pulls[5] = Pull(5, head, base, "main", author="alice")
    tokens = InstallationTokens(
        AppCredentials(app_id=1, private_key=app_key, base_url=API),
        retry=HttpRetry(max_attempts=1),
        sleep=lambda _s: None,
    )
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake.install(rsps)
        client = RepoClient(tokens.transport(1), REPO, cache=GitHubCache())
        info = PullRequestInfo(5, "alice", head, base, "main")
        yield fake, client, info, head, base


def test_implements_the_gate_port(world):
    _, client, info, *_ = world
    assert isinstance(GitHubPullContext(client, info), PullContext)


def test_basic_facts_and_changed_files(world):
    _, client, info, head, base = world
    ctx = GitHubPullContext(client, info)
    assert (ctx.author(), ctx.head_sha(), ctx.base_sha()) == ("alice", head, base)
    assert ctx.base_ref() == "refs/heads/main"
    assert {f.filename for f in ctx.changed_files()} == {"a.txt", "plans/x.yaml"}


def test_reviews_mapped_and_commits_loaded_once(world):
    fake, client, info, head, _ = world
    fake.repo(REPO).pulls[5].reviews = [
        {
            "id": 3,
            "user": {"login": "bob"},
            "state": "APPROVED",
            "commit_id": head,
            "submitted_at": "2026-11-25T01:00:00Z",
        }
    ]
    ctx = GitHubPullContext(client, info)
    (review,) = ctx.reviews()
    assert (review.login, review.state, review.commit_id) == ("bob", "APPROVED", head)
    assert review.submitted_at is not None and review.submitted_at.tzinfo is not None
    assert [c.sha for c in ctx.commits()] == [head]
    n = len(fake.calls)
    GitHubPullContext(client, info).commits()  # another evaluation, same head and base
    assert len(fake.calls) == n + 1  # only the reviews; commits came from the cache


def test_no_reviews_means_no_commit_request(world):
    fake, client, info, *_ = world
    ctx = GitHubPullContext(client, info, reviews=[])
    assert ctx.commits() == []
    assert fake.calls_to("GET", r"/commits$") == []


def test_too_many_commits_raise_instead_of_truncating(world):
    fake, client, info, head, _ = world
    fake.repo(REPO).pulls[5].reviews = [
        {"id": 3, "user": {"login": "bob"}, "state": "APPROVED", "commit_id": head}
    ]
    # GitHub stops listing at 250 commits: exactly 250 means some may be missing
    client.transport.paginate = lambda path, params=None: [{"sha": "x"}] * 250  # type: ignore
    with pytest.raises(GitHubError, match="250 or more commits"):
        GitHubPullContext(client, info).commits()


def test_permission_prefers_role_name_and_404_is_no_access(world):
    fake, client, info, *_ = world
    original = fake._route

    def route(method, path, query, headers, data):
        if path.endswith("/collaborators/tria/permission"):
            return 200, {}, {"permission": "read", "role_name": "triage"}
        if path.endswith("/collaborators/nobody/permission"):
            return 404, {}, {"message": "Not Found"}
        return original(method, path, query, headers, data)

    fake._route = route
    ctx = GitHubPullContext(client, info)
    assert ctx.permission("tria") == "triage"
    assert ctx.permission("nobody") is None
    assert ctx.permission("bob") == "write"


def test_file_blobs_at_commit(world):
    _, client, info, head, _base = world
    ctx = GitHubPullContext(client, info)
    assert ctx.file_blobs(head, ["a.txt", "gone.txt"]) == {
        "a.txt": git_blob_sha(b"2"),
        "gone.txt": None,
    }
    with pytest.raises(GitHubError) as info_:
        ctx.file_blobs("f" * 40, ["a.txt"])
    assert info_.value.status == 404


def test_team_members_paginated_and_cached(world):
    fake, client, info, *_ = world
    original = fake._route

    def route(method, path, query, headers, data):
        if path == "/orgs/acme/teams/sre/members":
            return 200, {}, [{"login": "carol"}, {"login": "dan"}]
        return original(method, path, query, headers, data)

    fake._route = route
    ctx = GitHubPullContext(client, info)
    assert ctx.team_members("acme/sre") == frozenset({"carol", "dan"})
    ctx.team_members("acme/sre")
    assert len(fake.calls_to("GET", r"/teams/sre/members$")) == 1
    with pytest.raises(GitHubError, match="org/team"):
        ctx.team_members("sre")
