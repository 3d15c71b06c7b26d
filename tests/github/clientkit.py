"""A ``RepoClient`` on the fake GitHub, for the adapter tests that count what a client sends.

Retries are fast and seeded, so a test can fail requests (``FakeGitHub.fail``) and count what
was sent again; the base is a GitHub Enterprise Server URL, so ``GITHUB_API_URL`` is honoured.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import responses
from ghfake import FakeGitHub

from app.github.auth import AppCredentials, InstallationTokens
from app.github.client import GitHubCache, HttpRetry, RepoClient

GHES = "https://ghes.example.com/api/v3"
REPO = "octo/ops"
HEAD = "a" * 40


@contextmanager
def fake_repo_client(app_key: str) -> Iterator[tuple[FakeGitHub, RepoClient]]:
    """(fake GitHub with ``REPO`` at ``HEAD`` on ``main``, a client for installation 1)."""
    fake = FakeGitHub(GHES)
    fake.repo(REPO).commit({"README.md": "x"}, branch="main", sha=HEAD)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake.install(rsps)
        tokens = InstallationTokens(
            AppCredentials(app_id=42, private_key=app_key, base_url=GHES),
            sleep=lambda _s: None,
            rng=random.Random(1),
            retry=HttpRetry(max_attempts=4, initial_delay=0.01, max_delay=0.01),
        )
        yield fake, RepoClient(tokens.transport(1), REPO, cache=GitHubCache())


def annotation_copies(fake: FakeGitHub, run_id: int) -> Counter[str]:
    """How many times each annotation message is on check run ``run_id``."""
    return Counter(a["message"] for a in fake.check_runs[run_id]["annotations"])
