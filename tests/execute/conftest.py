"""Fixtures for tests/execute (helpers live in ``tests.execute.fakes``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.execute.state import StateStore
from app.execute.store import RunStateStore


@pytest.fixture(params=["sqlite", "postgres"])
def open_state(request: pytest.FixtureRequest) -> Iterator[Callable[[Path], RunStateStore]]:
    """Opens the run state store on one backend: SQLite in the given data dir, or PostgreSQL in
    the test's own database (every open sees the same data, like reopening one file)."""
    opened: list[RunStateStore] = []
    if request.param == "sqlite":

        def factory(data_dir: Path) -> RunStateStore:
            opened.append(StateStore.open(data_dir))
            return opened[-1]
    else:
        from app.execute.state_pg import PostgresStateStore

        url = request.getfixturevalue("pg_url")

        def factory(data_dir: Path) -> RunStateStore:
            opened.append(PostgresStateStore(url))
            return opened[-1]

    yield factory
    for store in opened:
        with contextlib.suppress(Exception):  # closed by the test already
            store.close()
