"""A review event reads the reviews and the commits in one GraphQL query (``reviews_and_commits``).

The commits (who may not approve: authors and committers) are cached for the gate's
``GitHubPullContext.commits``; the answer is used only when it is about the evaluated head and
complete, otherwise the REST lists are read exactly as before.
"""

from __future__ import annotations

import random

import pytest
import responses
from ghfake import FakeGitHub, Pull

from app.github.auth import AppCredentials, InstallationTokens
from app.github.client import GitHubCache, HttpRetry, PullRequestInfo, RepoClient
from app.github.pull import GitHubPullContext, reviews_and_commits

GHES = "https://ghes.example.com/api/v3"
REPO = "octo/ops"
HEAD, BASE = "a" * 40, "b" * 40
PULL = PullRequestInfo(7, "alice", HEAD, BASE, "main")
REVIEW = {
    "id": 11,
    "user": {"login": "bob"},
    "state": "APPROVED",
    "commit_id": HEAD,
    "submitted_at": "2026-11-25T01:00:00Z",
}


@pytest.fixture
def fake():
    gh = FakeGitHub(GHES)
    repo = gh.repo(REPO)
    repo.commit({"README.md": b"hi\n"}, sha=BASE)
    repo.commit({"README.md": b"hi\n", "plans/a.yaml": b"x"}, sha=HEAD)
    repo.pulls[7] = Pull(7, HEAD, BASE, "main", author="alice", reviews=[dict(REVIEW)])
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        gh.install(rsps)
        yield gh
    assert gh.schema_errors == []  # the query is valid against GitHub's schema subset


@pytest.fixture
def client(app_key):
    tokens = InstallationTokens(
        AppCredentials(app_id=42, private_key=app_key, base_url=GHES),
        sleep=lambda _s: None,
        rng=random.Random(1),
        retry=HttpRetry(max_attempts=2, initial_delay=0, max_delay=0),
    )
    return RepoClient(tokens.transport(1), REPO, cache=GitHubCache())


def _reads(fake):
    return [(c.method, c.path) for c in fake.calls if "access_tokens" not in c.path]


def test_one_query_gives_reviews_and_caches_commits_with_their_authors(fake, client):
    original = fake._graphql

    def with_authors(request):
        status, headers, payload = original(request)
        node = payload["data"]["repository"]["pullRequest"]["commits"]["nodes"][0]["commit"]
        node["author"] = {"user": {"login": "bob"}}  # bob wrote a commit: may not approve
        node["committer"] = {"user": None}  # a committer with no GitHub account
        return status, headers, payload

    fake._graphql = with_authors
    (review,) = reviews_and_commits(client, PULL)
    assert (review.id, review.user, review.state, review.commit_id) == (11, "bob", "APPROVED", HEAD)
    assert review.submitted_at == "2026-11-25T01:00:00Z"
    commits = GitHubPullContext(client, PULL, reviews=[review]).commits()
    assert [(c.sha, c.author, c.committer) for c in commits] == [(HEAD, "bob", None)]
    assert _reads(fake) == [("POST", "/graphql")]  # commits() made no request


def test_commits_already_cached_reads_the_reviews_list_only(fake, client):
    reviews_and_commits(client, PULL)
    reviews_and_commits(client, PULL)
    assert _reads(fake) == [("POST", "/graphql"), ("GET", f"/repos/{REPO}/pulls/7/reviews")]


def test_head_moved_since_the_event_falls_back_to_rest(fake, client):
    fake.repo(REPO).pulls[7].head_sha = "c" * 40
    assert [r.id for r in reviews_and_commits(client, PULL)] == [11]
    assert client.cache.pr_commits == {}  # nothing cached for a head GitHub no longer has
    assert ("GET", f"/repos/{REPO}/pulls/7/reviews") in _reads(fake)


def test_more_than_one_page_falls_back_to_rest(fake, client):
    pull = fake.repo(REPO).pulls[7]
    pull.reviews = [dict(REVIEW, id=i) for i in range(1, 121)]
    assert len(reviews_and_commits(client, PULL)) == 120
    assert client.cache.pr_commits == {}
    GitHubPullContext(client, PULL, reviews=None).commits()
    assert ("GET", f"/repos/{REPO}/pulls/7/commits") in _reads(fake)


def test_graphql_refused_falls_back_to_rest(fake, client):
    fake.graphql_enabled = False
    assert [r.user for r in reviews_and_commits(client, PULL)] == ["bob"]
    assert _reads(fake)[-1] == ("GET", f"/repos/{REPO}/pulls/7/reviews")
