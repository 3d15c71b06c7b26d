"""One contract for every AuditStore: in-memory and git give the same answers."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.audit.events import GENESIS_HASH, ChainHead, event_hash
from app.audit.query import AuditQuery
from app.audit.store import AuditStore


def test_is_an_audit_store(any_store):
    assert isinstance(any_store, AuditStore)


def test_empty_store(any_store):
    assert any_store.head() == ChainHead(0, GENESIS_HASH)
    assert list(any_store.events()) == []
    assert any_store.commit() is None
    assert any_store.verify().ok


def test_append_assigns_seq_and_links_hashes(any_store, make_draft):
    first = any_store.append([make_draft(0), make_draft(1)])
    second = any_store.append([make_draft(2)])
    events = first + second
    assert [e.seq for e in events] == [1, 2, 3]
    assert events[0].prev_hash == GENESIS_HASH
    assert events[1].prev_hash == events[0].hash
    assert events[2].prev_hash == events[1].hash
    for e in events:
        assert e.hash == event_hash(e.model_dump(mode="json", exclude_none=True))
    assert any_store.head() == ChainHead(3, events[2].hash)


def test_events_survive_commit_in_order(any_store, make_draft):
    appended = any_store.append([make_draft(i) for i in range(60)])
    any_store.commit()
    assert list(any_store.events()) == appended
    assert list(any_store.events(after_seq=57)) == appended[57:]
    result = any_store.verify()
    assert result.ok, result.first_break
    assert result.count == 60
    assert result.head == ChainHead(60, appended[-1].hash)


def test_commit_returns_none_when_nothing_pending(any_store, make_draft):
    any_store.append([make_draft(0)])
    assert any_store.commit() is not None
    assert any_store.commit() is None
    assert any_store.flush() is None


def test_append_empty_batch_is_a_no_op(any_store):
    assert any_store.append([]) == []
    assert any_store.head().seq == 0


@pytest.mark.parametrize(
    "query",
    [
        AuditQuery(plan_id="plan-3"),
        AuditQuery(correlation_id="run-2"),
        AuditQuery(actor="user1"),
        AuditQuery(step="step-1"),
        AuditQuery(types=("run.started", "run.finished")),
        AuditQuery(team="search", environment="prod"),
        AuditQuery(plan_id="plan-1", newest_first=True, limit=3),
        AuditQuery(plan_id="nope"),
        AuditQuery(limit=5),
    ],
    ids=repr,
)
def test_queries_filter_like_the_reference(any_store, make_draft, query):
    events = any_store.append([make_draft(i) for i in range(80)])
    any_store.commit()
    expected = query.apply(events)
    assert any_store.query(query) == expected
    assert expected or query.plan_id == "nope"


def test_time_range_is_inclusive_exclusive(any_store, make_draft):
    events = any_store.append([make_draft(i) for i in range(30)])
    t0 = events[0].timestamp
    found = any_store.query(
        AuditQuery(since=t0 + timedelta(seconds=10), until=t0 + timedelta(seconds=20))
    )
    assert [e.seq for e in found] == list(range(11, 21))


def test_queries_see_uncommitted_events(any_store, make_draft):
    any_store.append([make_draft(i) for i in range(3)])
    assert len(any_store.query(AuditQuery())) == 3
    any_store.append([make_draft(3, plan_id="late")])
    assert [e.seq for e in any_store.query(AuditQuery(plan_id="late"))] == [4]


def test_store_never_rewrites_history(tmp_path, make_draft):
    """Every commit only adds segments; every earlier tip stays an ancestor of the ref."""
    import git

    from app.audit.git_store import GitAuditStore

    git.Repo.init(tmp_path)
    store = GitAuditStore(tmp_path, batch_size=7)
    tips: list[str] = []
    blobs: dict[str, str] = {}
    for k in range(6):
        store.append([make_draft(10 * k + i) for i in range(k + 3)])
        store.commit()
        tip = store.tip()
        assert all(store.is_ancestor(old, tip) for old in tips)
        now = {s.path: s.blob for s in store.segments()}
        assert all(now[path] == blob for path, blob in blobs.items())
        tips.append(tip)
        blobs = now


_OPS = st.lists(
    st.tuples(st.integers(min_value=0, max_value=9), st.booleans()), min_size=1, max_size=8
)


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=_OPS)
def test_git_store_behaves_like_the_reference(tmp_path_factory, ops):
    """Random append sizes and commit points: same events, same answers as in memory."""
    import git
    from audit_support import draft

    from app.audit.git_store import GitAuditStore
    from app.audit.store import InMemoryAuditStore

    path = tmp_path_factory.mktemp("repo")
    git.Repo.init(path)
    real, ref = GitAuditStore(path, batch_size=5), InMemoryAuditStore()
    n = 0
    for size, commit in ops:
        batch = [draft(n + i) for i in range(size)]
        n += size
        assert real.append(batch) == ref.append(batch)
        if commit:
            real.commit()
    assert list(real.events()) == list(ref.events())
    assert real.head() == ref.head()
    for query in (AuditQuery(plan_id="plan-1"), AuditQuery(types=("run.finished",), limit=2)):
        assert real.query(query) == ref.query(query)
    assert real.verify().ok
    real.close()
