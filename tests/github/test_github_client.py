"""The PyGithub adapter against ``responses``: rate limits, 5xx, caching, App tokens, GHES."""

from __future__ import annotations

import base64
import json
import random
import re

import jwt
import pytest
import responses
from ghfake import FakeGitHub, git_blob_sha

from app.errors import GitHubError, GitHubUnavailable, RateLimited
from app.github.auth import AppCredentials, InstallationTokens
from app.github.client import GitHubCache, HttpRetry, RepoClient, map_error

GHES = "https://ghes.example.com/api/v3"


def U(path: str) -> re.Pattern[str]:
    """A URL under GHES (PyGithub may spell the default port out)."""
    return re.compile(r"https://ghes\.example\.com(:443)?/api/v3" + re.escape(path) + r"(\?.*)?$")


REPO = "octo/ops"


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def slept() -> list[float]:
    return []


@pytest.fixture
def tokens(app_key, clock, slept) -> InstallationTokens:
    return InstallationTokens(
        AppCredentials(app_id=42, private_key=app_key, base_url=GHES),
        clock=clock,
        sleep=slept.append,
        rng=random.Random(7),
        retry=HttpRetry(max_attempts=3, initial_delay=1.0, max_delay=4.0, max_inline_wait=30),
    )


@pytest.fixture
def rsps():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as r:
        yield r


def _token(rsps, *, expires="2099-01-01T00:00:00Z", installation=7):
    return rsps.add(
        responses.POST,
        U(f"/app/installations/{installation}/access_tokens"),
        json={"token": f"ghs_{installation}", "expires_at": expires},
        status=201,
    )


def _client(tokens, installation=7) -> RepoClient:
    return RepoClient(tokens.transport(installation), REPO, cache=GitHubCache())


def test_token_endpoint_uses_github_api_url_and_app_jwt(rsps, tokens, app_key):
    token_call = _token(rsps)
    rsps.add(
        responses.GET,
        U(f"/repos/{REPO}/collaborators/bob/permission"),
        json={"permission": "admin"},
    )
    assert _client(tokens).permission("bob") == "admin"
    assert token_call.call_count == 1
    request = rsps.calls[0].request
    assert U("/app/installations/7/access_tokens").match(request.url)
    bearer = request.headers["Authorization"].removeprefix("Bearer ")
    claims = jwt.decode(bearer, options={"verify_signature": False})
    assert claims["iss"] in ("42", 42)
    assert rsps.calls[1].request.headers["Authorization"] == "token ghs_7"


def test_installation_token_cached_until_shortly_before_expiry(rsps, tokens, clock):
    token_call = _token(rsps, expires="2023-11-14T23:13:20Z")  # clock.t + 3600
    rsps.add(
        responses.GET, U(f"/repos/{REPO}/collaborators/a/permission"), json={"permission": "read"}
    )
    client = _client(tokens)
    for _ in range(3):
        client.permission("a")
    assert token_call.call_count == 1
    clock.t += 3600 - 299  # within the 5-minute refresh margin
    client.permission("a")
    assert token_call.call_count == 2


def test_one_token_per_installation(rsps, tokens):
    a = _token(rsps, installation=1)
    b = _token(rsps, installation=2)
    assert tokens.token(1) == "ghs_1" and tokens.token(2) == "ghs_2"
    assert tokens.token(1) == "ghs_1"
    assert (a.call_count, b.call_count) == (1, 1)


def test_token_endpoint_5xx_retried(rsps, tokens, slept):
    rsps.add(
        responses.POST,
        U("/app/installations/7/access_tokens"),
        status=502,
        json={"message": "bad gateway"},
    )
    _token(rsps)
    assert tokens.token(7) == "ghs_7"
    assert len(slept) == 1


def test_uninstalled_installation_is_clear_error(rsps, tokens):
    rsps.add(
        responses.POST,
        U("/app/installations/7/access_tokens"),
        status=404,
        json={"message": "Not Found"},
    )
    with pytest.raises(GitHubError, match="installation 7 not found"):
        tokens.token(7)


def test_5xx_retried_with_backoff_and_jitter_then_gives_up(rsps, tokens, slept):
    _token(rsps)
    files = rsps.add(
        responses.GET, U(f"/repos/{REPO}/pulls/1/files"), status=500, json={"message": "oops"}
    )
    with pytest.raises(GitHubUnavailable):
        _client(tokens).changed_files(1)
    assert files.call_count == 3  # max_attempts, no more
    assert len(slept) == 2
    assert 0.5 <= slept[0] <= 1.0 and 1.0 <= slept[1] <= 2.0


def test_secondary_rate_limit_retry_after_honoured(rsps, tokens, slept):
    _token(rsps)
    url = U(f"/repos/{REPO}/check-runs")
    rsps.add(
        responses.POST,
        url,
        status=403,
        headers={"Retry-After": "7"},
        json={"message": "You have exceeded a secondary rate limit."},
    )
    rsps.add(responses.POST, url, status=201, json={"id": 5})
    assert _client(tokens).create_check_run({"name": "x", "head_sha": "a" * 40}) == 5
    assert slept == [7.0]


def test_long_rate_limit_not_slept_inline(rsps, tokens, slept, clock):
    _token(rsps)
    reset = int(clock.t) + 900
    rsps.add(
        responses.GET,
        U(f"/repos/{REPO}/pulls/1/reviews"),
        status=403,
        headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)},
        json={"message": "API rate limit exceeded"},
    )
    with pytest.raises(RateLimited) as info:
        _client(tokens).reviews(1)
    assert info.value.retry_after == pytest.approx(900)
    assert slept == []


def test_exhausted_primary_quota_remembered(rsps, tokens, clock):
    _token(rsps)
    reset = int(clock.t) + 60
    rsps.add(
        responses.GET,
        U(f"/repos/{REPO}/collaborators/a/permission"),
        json={"permission": "read"},
        headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)},
    )
    client = _client(tokens)
    client.permission("a")
    n = len(rsps.calls)
    with pytest.raises(RateLimited):
        client.permission("a")
    assert len(rsps.calls) == n  # no request spent on a certain 403


def test_map_error_cases():
    now = 100.0
    assert map_error(200, {}, {}, now=now) is None
    e = map_error(429, {"Retry-After": "12"}, {"message": "slow"}, now=now)
    assert isinstance(e, RateLimited) and e.retry_after == 12
    e = map_error(403, {}, {"message": "You have exceeded a secondary rate limit"}, now=now)
    assert isinstance(e, RateLimited) and e.retry_after == 60
    e = map_error(403, {}, {"message": "Resource not accessible by integration"}, now=now)
    assert type(e) is GitHubError and e.status == 403
    assert isinstance(map_error(503, {}, None, now=now), GitHubUnavailable)
    e = map_error(404, {}, {"message": "Not Found"}, now=now)
    assert type(e) is GitHubError and e.status == 404


def test_404_not_retried(rsps, tokens, slept):
    _token(rsps)
    rsps.add(
        responses.GET, U(f"/repos/{REPO}/pulls/9/files"), status=404, json={"message": "Not Found"}
    )
    with pytest.raises(GitHubError) as info:
        _client(tokens).changed_files(9)
    assert info.value.status == 404 and slept == []


def test_blob_cached_by_sha(rsps, tokens):
    _token(rsps)
    data = b"id: x\n"
    sha = git_blob_sha(data)
    blob = rsps.add(
        responses.GET,
        U(f"/repos/{REPO}/git/blobs/{sha}"),
        json={"sha": sha, "encoding": "base64", "content": base64.b64encode(data).decode()},
    )
    cache = GitHubCache()
    a = RepoClient(tokens.transport(7), REPO, cache=cache)
    b = RepoClient(tokens.transport(7), REPO, cache=cache)
    assert a.blob(sha) == data and b.blob(sha) == data
    assert blob.call_count == 1


def test_conditional_request_uses_etag(rsps, tokens):
    _token(rsps)
    url = U(f"/repos/{REPO}/pulls/1/reviews")
    review = {"id": 1, "user": {"login": "a"}, "state": "APPROVED", "commit_id": "c" * 40}
    rsps.add(responses.GET, url, json=[review], headers={"ETag": '"v1"'})
    rsps.add(responses.GET, url, status=304, body="", headers={"ETag": '"v1"'})
    client = _client(tokens)
    first = client.reviews(1)
    second = client.reviews(1)
    assert first == second and second[0].user == "a"
    assert rsps.calls[-1].request.headers["If-None-Match"] == '"v1"'


def test_pagination_follows_link_header(rsps, tokens):
    _token(rsps)
    url = U(f"/repos/{REPO}/pulls/1/commits")
    nxt = f"{GHES}/repos/{REPO}/pulls/1/commits?per_page=100&page=2"
    rsps.add(responses.GET, url, json=[{"sha": "a"}], headers={"Link": f'<{nxt}>; rel="next"'})
    rsps.add(responses.GET, url, json=[{"sha": "b"}])
    assert _client(tokens).commits(1) == ["a", "b"]


def test_policies_cached_by_base_commit_and_tree_sha(rsps, tokens):
    _token(rsps)
    fake = FakeGitHub(GHES)
    repo = fake.repo(REPO)
    base1 = repo.commit({"policies/a.yaml": "a: 1\n", "README.md": "x"})
    base2 = repo.commit({"policies/a.yaml": "a: 1\n", "README.md": "y"})
    fake.install(rsps)
    cache = GitHubCache()
    client = RepoClient(tokens.transport(7), REPO, cache=cache)
    tree1, listing = client.directory_at(base1, "policies")
    assert list(listing) == ["policies/a.yaml"]
    assert len(fake.calls) == 2  # root tree + policies tree
    assert client.directory_at(base1, "policies") == (tree1, listing)
    assert len(fake.calls) == 2  # same base commit: no request
    tree2, _ = client.directory_at(base2, "policies")
    assert tree2 == tree1 and len(fake.calls) == 3  # new base, same policies tree: one request


def test_write_bodies_match_openapi(rsps, tokens):
    _token(rsps)
    fake = FakeGitHub(GHES)
    repo = fake.repo(REPO)
    repo.commit({"README.md": "x"}, branch="main")
    fake.install(rsps)
    client = _client(tokens)
    base = client.ref_sha("main")
    client.create_branch("plan/x", base)
    client.put_file("plans/x.yaml", b"id: x\n", branch="plan/x", message="Propose plan x")
    number, _ = client.create_pull(title="Plan x", head="plan/x", base="main", body="...")
    check = client.create_check_run(
        {
            "name": "plangate/validate",
            "head_sha": base,
            "status": "completed",
            "conclusion": "success",
            "output": {"title": "ok", "summary": "ok"},
        }
    )
    client.update_check_run(check, {"output": {"title": "ok", "summary": "ok"}})
    assert number == 1
    assert fake.schema_errors == []


def test_schema_validation_catches_a_bad_body(rsps, tokens):
    """The OpenAPI check itself can fail (so the tests above mean something)."""
    _token(rsps)
    fake = FakeGitHub(GHES)
    fake.repo(REPO)
    fake.install(rsps)
    _client(tokens).create_check_run({"name": "x", "head_sha": "a", "conclusion": "great"})
    assert any("conclusion" in e for e in fake.schema_errors)
    assert json.dumps(fake.schema_errors)
