"""Shared test helpers. Each area keeps its own fakes next to its tests."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def repo_root() -> Path:
    return ROOT


# a throwaway PostgreSQL cluster (session) and a database per test, for the store backends
from tests.pgcluster import pg_server, pg_url  # noqa: E402, F401
