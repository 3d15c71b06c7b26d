"""A branch ruleset's refusal is not a race: ``AttestationStore`` says so at once.

GitHub answers 422 both for a lost race on a ref ("Update is not a fast forward", "Reference
already exists") and for a write a ruleset refuses ("Repository rule violations found", the
message the fake in ``tests/execute/test_execute_app_token_writes.py`` uses). Only the race is
retried on the new tip; a refusal is ``AttestationBranchRefused`` after one attempt, naming the
branch and what to do.
"""

from __future__ import annotations

import pytest
import responses
from ghfake import Pull
from gitdata_fake import GitDataGitHub

from app.errors import GitHubUnavailable
from app.github.attestations import ATTESTATION_BRANCH, AttestationBranchRefused, AttestationStore
from app.github.auth import AppCredentials, InstallationTokens
from app.github.client import GitHubCache, HttpRetry, RepoClient

API = "https://api.github.com"
REPO = "octo/ops"
PATH = "pr-5/" + "a" * 40 + ".dsse.json"
DOC = b'{"payload":"x","payloadType":"application/vnd.in-toto+json","signatures":[]}'
RULES = "Repository rule violations found\n\nCannot update this protected ref.\n\n"


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
    assert fake.schema_errors == []


def test_ruleset_refusal_of_an_update_is_one_attempt_and_names_the_branch(world):
    fake, _repo, client = world
    store = AttestationStore(client)
    store.store(PATH, DOC, message="one")  # the branch exists
    fake.fail("PATCH", r"/git/refs/heads/", status=422, times=5, message=RULES)
    with pytest.raises(AttestationBranchRefused) as caught:
        store.store("pr-6/" + "b" * 40 + ".dsse.json", b"{}", message="two")
    assert len(fake.calls_to("PATCH", r"/git/refs/heads/")) == 1  # not retried
    exc = caught.value
    assert not isinstance(exc, GitHubUnavailable) and exc.status == 422
    assert f"branch {ATTESTATION_BRANCH}" in exc.message
    assert "ruleset" in exc.message and "Repository rule violations found" in exc.message
    assert "kept moving" not in str(exc)
    assert "GITHUB_APP_ID and GITHUB_PRIVATE_KEY" in exc.hint
    assert "bypass list" in exc.hint


def test_ruleset_refusal_of_the_branch_creation_is_not_retried(world):
    fake, _repo, client = world
    fake.fail("POST", r"/git/refs$", status=422, times=5, message=RULES)
    with pytest.raises(AttestationBranchRefused, match="refused to create branch"):
        AttestationStore(client).store(PATH, DOC, message="one")
    assert len(fake.calls_to("POST", r"/git/refs$")) == 1


def test_an_unknown_422_is_not_retried_either(world):
    fake, _repo, client = world
    store = AttestationStore(client)
    store.store(PATH, DOC, message="one")
    fake.fail("PATCH", r"/git/refs/heads/", status=422, times=5, message="Object does not exist")
    with pytest.raises(AttestationBranchRefused, match="Object does not exist"):
        store.store("pr-6/" + "b" * 40 + ".dsse.json", b"{}", message="two")
    assert len(fake.calls_to("PATCH", r"/git/refs/heads/")) == 1


def test_a_real_fast_forward_conflict_is_still_retried(world):
    fake, repo, client = world
    store = AttestationStore(client)
    store.store(PATH, DOC, message="one")
    fake.fail(
        "PATCH", r"/git/refs/heads/", status=422, times=2, message="Update is not a fast forward"
    )
    stored = store.store("pr-6/" + "b" * 40 + ".dsse.json", b"{}", message="two")
    assert stored.created and repo.branches[ATTESTATION_BRANCH] == stored.commit_sha
    assert [c.status for c in fake.calls_to("PATCH", r"/git/refs/heads/")] == [422, 422, 200]


def test_a_conflict_that_never_ends_is_still_kept_moving(world):
    fake, _repo, client = world
    store = AttestationStore(client, max_attempts=3)
    store.store(PATH, DOC, message="one")
    fake.fail(
        "PATCH", r"/git/refs/heads/", status=422, times=9, message="Update is not a fast forward"
    )
    with pytest.raises(GitHubUnavailable, match="kept moving"):
        store.store("pr-6/" + "b" * 40 + ".dsse.json", b"{}", message="two")
    assert len(fake.calls_to("PATCH", r"/git/refs/heads/")) == 3
