"""``AttestationStore``: the bot-only attestation branch through the git-data API (fake GitHub)."""

from __future__ import annotations

import pytest
import responses
from ghfake import Pull
from gitdata_fake import GitDataGitHub
from hypothesis import given, settings
from hypothesis import strategies as st

from app.errors import GitHubError, GitHubUnavailable
from app.github.attestations import ATTESTATION_BRANCH, AttestationStore
from app.github.auth import AppCredentials, InstallationTokens
from app.github.client import GitHubCache, HttpRetry, RepoClient

API = "https://api.github.com"
REPO = "octo/ops"
PATH = "pr-5/" + "a" * 40 + ".dsse.json"
DOC = b'{"payload":"x","payloadType":"application/vnd.in-toto+json","signatures":[]}'


@pytest.fixture
def world(app_key):
    fake = GitDataGitHub(API)
    repo = fake.repo(REPO)
    base = repo.commit({"README.md": "hi\n"}, branch="main")
    head = repo.commit({"README.md": "hi\n", "plans/x.yaml": "id: x\n"}, branch="feature")
    repo.pulls[5] = Pull(5, head, base, "main", author="alice")
    tokens = InstallationTokens(
        AppCredentials(app_id=1, private_key=app_key, base_url=API),
        retry=HttpRetry(max_attempts=1),
        sleep=lambda _s: None,
    )
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake.install(rsps)
        client = RepoClient(tokens.transport(1), REPO, cache=GitHubCache())
        yield fake, repo, client
    assert fake.schema_errors == []  # every body we sent matches GitHub's OpenAPI schema


def _writes(fake):
    return [c for c in fake.calls if c.method in ("POST", "PATCH", "PUT", "DELETE")]


def test_first_store_creates_orphan_branch(world):
    fake, repo, client = world
    stored = AttestationStore(client).store(PATH, DOC, message="attest")
    assert stored.created and stored.branch == ATTESTATION_BRANCH
    assert repo.branches[ATTESTATION_BRANCH] == stored.commit_sha
    assert fake.files_on(repo, ATTESTATION_BRANCH) == {PATH: DOC}  # nothing from the code
    assert fake.git_commits[stored.commit_sha]["parents"] == []  # an orphan root commit
    (create_ref,) = fake.calls_to("POST", r"/git/refs$")
    assert create_ref.body == {"ref": f"refs/heads/{ATTESTATION_BRANCH}", "sha": stored.commit_sha}
    assert AttestationStore(client).read(PATH) == DOC


def test_second_store_builds_on_the_branch_without_force(world):
    fake, repo, client = world
    store = AttestationStore(client)
    first = store.store(PATH, DOC, message="one")
    other = "pr-6/" + "b" * 40 + ".dsse.json"
    second = store.store(other, b"{}", message="two")
    assert fake.files_on(repo, ATTESTATION_BRANCH) == {PATH: DOC, other: b"{}"}
    assert fake.git_commits[second.commit_sha]["parents"] == [first.commit_sha]
    (update,) = fake.calls_to("PATCH", r"/git/refs/heads/")
    assert update.body == {"sha": second.commit_sha, "force": False}


def test_store_is_idempotent_and_survives_ref_race(world):
    fake, repo, client = world
    store = AttestationStore(client)
    first = store.store(PATH, DOC, message="one")

    # idempotent: the same bytes at the same path write nothing at all
    before = len(_writes(fake))
    again = store.store(PATH, DOC, message="one again")
    assert not again.created and again.commit_sha == first.commit_sha
    assert len(_writes(fake)) == before
    assert fake.history(repo, ATTESTATION_BRANCH) == [first.commit_sha]

    # a race: another writer moves the branch between our read and our ref update
    theirs = "pr-7/" + "c" * 40 + ".dsse.json"
    raced: list[str] = []

    def other_writer(r, branch):
        if not raced:
            raced.append(fake.advance(r, branch, theirs, b"theirs"))

    fake.on_ref_write.append(other_writer)
    ours = "pr-8/" + "d" * 40 + ".dsse.json"
    stored = store.store(ours, b"ours", message="ours")
    updates = fake.calls_to("PATCH", r"/git/refs/heads/")
    assert [c.status for c in updates] == [422, 200]  # not a fast forward, then on top
    assert all(c.body["force"] is False for c in updates)
    # nothing lost: the other writer's file and ours are both on the branch, in a line
    assert fake.files_on(repo, ATTESTATION_BRANCH) == {PATH: DOC, theirs: b"theirs", ours: b"ours"}
    assert fake.history(repo, ATTESTATION_BRANCH) == [stored.commit_sha, raced[0], first.commit_sha]


def test_branch_created_concurrently_is_reread(world):
    fake, repo, client = world
    other = "pr-1/" + "e" * 40 + ".dsse.json"

    def creator(r, branch):
        if branch not in r.branches:
            r.branches[branch] = fake.write_commit(r, {other: b"first"}, [], "first")

    fake.on_ref_write.append(creator)
    stored = AttestationStore(client).store(PATH, DOC, message="attest")
    assert [c.status for c in fake.calls_to("POST", r"/git/refs$")] == [422]
    assert fake.files_on(repo, ATTESTATION_BRANCH) == {other: b"first", PATH: DOC}
    assert stored.commit_sha == repo.branches[ATTESTATION_BRANCH]


def test_ref_that_keeps_moving_gives_up_retryably(world):
    fake, _, client = world
    store = AttestationStore(client, max_attempts=3)
    store.store(PATH, DOC, message="one")
    n = iter(range(100))
    fake.on_ref_write.append(lambda r, b: fake.advance(r, b, f"pr-9/{next(n)}.dsse.json", b"x"))
    with pytest.raises(GitHubUnavailable, match="kept moving"):
        store.store("pr-2/" + "f" * 40 + ".dsse.json", b"y", message="two")
    assert len(fake.calls_to("PATCH", r"/git/refs/heads/")) == 3


def test_changed_document_replaces_the_file_in_a_new_commit(world):
    fake, repo, client = world
    store = AttestationStore(client)
    first = store.store(PATH, DOC, message="one")
    second = store.store(PATH, b"newer", message="two")
    assert second.created and second.commit_sha != first.commit_sha
    assert fake.files_on(repo, ATTESTATION_BRANCH) == {PATH: b"newer"}
    assert fake.history(repo, ATTESTATION_BRANCH) == [second.commit_sha, first.commit_sha]


def test_other_errors_are_not_retried(world):
    fake, _, client = world
    fake.fail("POST", r"/git/blobs$", status=403, times=1, message="Resource not accessible")
    with pytest.raises(GitHubError) as err:
        AttestationStore(client).store(PATH, DOC, message="x")
    assert err.value.status == 403


def test_only_the_attestation_branch_is_written(world):
    fake, repo, client = world
    feature, main = repo.branches["feature"], repo.branches["main"]
    AttestationStore(client).store(PATH, DOC, message="x")
    assert (repo.branches["feature"], repo.branches["main"]) == (feature, main)
    refs = [c for c in _writes(fake) if "/git/refs" in c.path]
    assert refs and all(
        c.path.endswith(f"/heads/{ATTESTATION_BRANCH}")
        or c.body.get("ref") == f"refs/heads/{ATTESTATION_BRANCH}"
        for c in refs
    )


@pytest.mark.parametrize("branch", ["refs/heads/x", "", "a/../b"])
def test_branch_must_be_plain(world, branch):
    _, _, client = world
    with pytest.raises(ValueError):
        AttestationStore(client, branch=branch)


@pytest.mark.parametrize("path", ["/abs.json", "a/../b.json", "a//b.json"])
def test_path_must_be_relative(world, path):
    _, _, client = world
    with pytest.raises(ValueError):
        AttestationStore(client).store(path, DOC, message="x")


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=4))
def test_property_concurrent_writers_never_lose_an_attestation(app_key, races):
    """Whatever number of other writers win the race before each of our stores, every file
    ends up on the branch, history is linear, and the ref is never forced."""
    fake = GitDataGitHub(API)
    repo = fake.repo(REPO)
    repo.commit({"README.md": "hi\n"}, branch="main")
    tokens = InstallationTokens(
        AppCredentials(app_id=1, private_key=app_key, base_url=API),
        retry=HttpRetry(max_attempts=1),
        sleep=lambda _s: None,
    )
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake.install(rsps)
        store = AttestationStore(
            RepoClient(tokens.transport(1), REPO, cache=GitHubCache()), max_attempts=5
        )
        expected: dict[str, bytes] = {}
        pending: list[int] = []
        counter = iter(range(10_000))

        def other_writer(r, branch):
            if pending and pending[0] > 0 and branch in r.branches:
                pending[0] -= 1
                path = f"pr-99/{next(counter)}.dsse.json"
                fake.advance(r, branch, path, path.encode())
                expected[path] = path.encode()

        fake.on_ref_write.append(other_writer)
        for i, n in enumerate(races):
            pending[:] = [n]
            path = f"pr-{i + 1}/" + f"{i:040x}" + ".dsse.json"
            store.store(path, f"doc {i}".encode(), message=f"store {i}")
            expected[path] = f"doc {i}".encode()
        assert fake.files_on(repo, ATTESTATION_BRANCH) == expected
        history = fake.history(repo, ATTESTATION_BRANCH)
        assert len(history) == len(expected)  # one commit per file, none dropped
        assert all(c.body.get("force") is False for c in fake.calls_to("PATCH", r"/git/refs/"))
    assert fake.schema_errors == []
