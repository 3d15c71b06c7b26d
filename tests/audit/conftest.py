"""Audit fixtures: stores on tmp_path (the contract suite runs against each)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import git
import pytest
from audit_support import draft

from app.audit.events import AuditEventDraft
from app.audit.git_store import GitAuditStore
from app.audit.store import InMemoryAuditStore


@pytest.fixture
def make_draft() -> Callable[..., AuditEventDraft]:
    return draft


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    git.Repo.init(path)
    return path


@pytest.fixture
def git_store(git_repo: Path) -> Iterator[GitAuditStore]:
    store = GitAuditStore(git_repo, batch_size=25)
    yield store
    store.close()


@pytest.fixture(params=["memory", "git"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """The contract suite runs against every AuditStore implementation."""
    if request.param == "memory":
        yield InMemoryAuditStore()
        return
    path = tmp_path / "repo"
    git.Repo.init(path)
    store = GitAuditStore(path, batch_size=25)
    yield store
    store.close()
