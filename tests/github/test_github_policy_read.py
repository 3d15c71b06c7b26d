"""Reading ``policies/`` at the base commit: one request however many files, exact bytes.

``RepoClient.files_under`` asks GraphQL for the folder's tree with its blobs' text (validated by
the fake against GitHub's published schema subset), checks every text against its blob SHA and
falls back to the REST tree and blob endpoints for anything it cannot give exactly.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import responses
from ghfake import FakeGitHub, git_blob_sha

from app.github.auth import AppCredentials, InstallationTokens
from app.github.client import GitHubCache, HttpRetry, RepoClient
from app.server.engine import PolicyEngineEvaluator

GHES = "https://ghes.example.com/api/v3"
REPO = "octo/ops"
BASE = "b" * 40
POLICIES = {f"policies/p{i}.yaml": f"# policy file {i}\nteams: {{}}\n".encode() for i in range(6)}


@pytest.fixture
def fake():
    gh = FakeGitHub(GHES)
    gh.repo(REPO).commit({"README.md": b"hi\n", **POLICIES}, sha=BASE)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        gh.install(rsps)
        yield gh
    assert gh.schema_errors == []


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
    return [c for c in fake.calls if "access_tokens" not in c.path]


def test_six_policy_files_cost_one_graphql_request_at_the_ghes_graphql_url(fake, client):
    tree_sha, files = client.files_under(BASE, "policies")
    assert files == POLICIES
    assert tree_sha == fake.repo(REPO).tree(BASE, "policies/")[0]
    (call,) = _reads(fake)
    assert (call.method, call.path) == ("POST", "/graphql")  # /api/graphql on GHES
    assert call.body["variables"]["expression"] == f"{BASE}:policies"


def test_base_seen_before_costs_nothing(fake, client):
    client.files_under(BASE, "policies")
    before = len(fake.calls)
    assert client.files_under(BASE, "policies")[1] == POLICIES
    assert len(fake.calls) == before


def test_nested_folder_one_level_still_one_request(fake, client):
    nested = {**POLICIES, "policies/teams/sre.yaml": b"teams: {}\n"}
    fake.repo(REPO).commit(nested, sha="c" * 40)
    assert client.files_under("c" * 40, "policies")[1] == nested
    assert len(_reads(fake)) == 1


def test_deeper_folder_falls_back_to_rest_with_the_same_result(fake, client):
    deep = {**POLICIES, "policies/a/b/deep.yaml": b"teams: {}\n"}
    fake.repo(REPO).commit(deep, sha="d" * 40)
    tree_sha, files = client.files_under("d" * 40, "policies")
    assert files == deep
    assert tree_sha == fake.repo(REPO).tree("d" * 40, "policies/")[0]
    assert fake.calls_to("GET", r"/git/trees/")  # the REST listing, recursive


def test_text_that_does_not_hash_to_its_blob_sha_is_read_by_rest(fake, client):
    """GraphQL text is only trusted when ``git hash-object`` of it is the entry's oid."""
    original = fake._graphql

    def tampered(request):
        status, headers, payload = original(request)
        for e in payload["data"]["repository"]["object"]["entries"]:
            if e["name"] == "p0.yaml":
                e["object"]["text"] = "allow: everything\n"
        return status, headers, payload

    fake._graphql = tampered
    assert client.files_under(BASE, "policies")[1] == POLICIES
    (blob,) = fake.calls_to("GET", r"/git/blobs/")
    assert blob.path.endswith(git_blob_sha(POLICIES["policies/p0.yaml"]))


def test_crlf_and_binary_bytes_come_back_exact(fake, client):
    odd = {"policies/crlf.yaml": b"teams: {}\r\n", "policies/bin.dat": b"\xff\xfe\x00"}
    fake.repo(REPO).commit(odd, sha="e" * 40)
    assert client.files_under("e" * 40, "policies")[1] == odd
    assert len(fake.calls_to("GET", r"/git/blobs/")) == 1  # only the binary one


def test_graphql_unavailable_falls_back_to_rest(fake, client):
    fake.graphql_enabled = False
    assert client.files_under(BASE, "policies")[1] == POLICIES
    assert len(fake.calls_to("GET", r"/git/blobs/")) == len(POLICIES)


def test_no_policies_folder_is_empty_not_an_error(fake, client):
    fake.repo(REPO).commit({"README.md": b"hi\n"}, sha="f" * 40)
    assert client.files_under("f" * 40, "policies") == (None, {})
    assert len(_reads(fake)) == 1


def test_policy_set_parsed_once_per_tree_sha(monkeypatch):
    import app.server.engine as engine

    parsed = []
    real = engine.load_policy_files

    def counting(files, **kw):
        parsed.append(dict(files))
        return real(files, **kw)

    monkeypatch.setattr(engine, "load_policy_files", counting)
    evaluator = PolicyEngineEvaluator()

    class Req:
        def __init__(self, sha, files):
            self.policy_tree_sha, self.policy_files = sha, files

    root = Path(__file__).resolve().parents[2]
    one = {f"policies/{f.name}": f.read_bytes() for f in (root / "policies").glob("*.yaml")}
    first = evaluator._policy(Req("t1", one))
    assert evaluator._policy(Req("t1", one)) is first
    evaluator._policy(Req("t2", one))
    evaluator._policy(Req(None, one))  # no tree SHA: never cached
    evaluator._policy(Req(None, one))
    assert len(parsed) == 4
