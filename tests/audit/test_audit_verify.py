"""Tampering is detected: editing, deleting or reordering any event or commit.

Each test tampers the way an attacker with write access to the repository would (git plumbing,
bypassing the store) and checks that verify names the first broken event or commit.
"""

from __future__ import annotations

import json

import git
import pytest
from audit_support import build_commit, draft, rewrite_history
from hypothesis import given, settings
from hypothesis import strategies as st

from app.audit.events import chain, verify_records
from app.audit.git_store import DEFAULT_REF, GitAuditStore
from app.audit.store import InMemoryAuditStore
from app.audit.verify_git import read_anchor


@pytest.fixture
def store(git_repo):
    """Three commits of ten events each (seq 1-10, 11-20, 21-30); never verified yet."""
    s = GitAuditStore(git_repo, batch_size=1000)
    for k in range(3):
        s.append([draft(10 * k + i) for i in range(10)])
        s.commit(f"phase {k}")
    yield s
    s.close()


def _repo(store: GitAuditStore) -> git.Repo:
    return git.Repo(store._repo.git_dir)


def _edit_line(files: dict[str, bytes], index: int, change) -> None:
    path = next(iter(files))
    lines = files[path].decode().splitlines()
    lines = change(lines, index)
    files[path] = ("\n".join(lines) + "\n").encode()


def test_hash_chain_verifies(store):
    result = store.verify()
    assert result.ok, result.first_break
    assert result.count == 30
    assert read_anchor(store) == store.tip()


def test_edited_event_in_rewritten_history_is_named(store):
    def edit(commits):
        def change(lines, i):
            data = json.loads(lines[i])
            data["payload"]["note"] = "nothing to see"
            lines[i] = json.dumps(data, separators=(",", ":"))
            return lines

        _edit_line(commits[1]["files"], 4, change)  # seq 15
        return commits

    rewrite_history(_repo(store), DEFAULT_REF, edit)
    result = store.verify()
    assert not result.ok
    assert result.first_break.seq == 15
    assert "edited" in result.first_break.reason
    assert "000000000011-000000000020.jsonl:5" in result.first_break.where


def test_edited_event_with_recomputed_hash_breaks_the_next_link(store):
    from app.audit.events import event_hash

    def edit(commits):
        def change(lines, i):
            data = json.loads(lines[i])
            data["actor"]["id"] = "mallory"
            data["hash"] = event_hash(data)
            lines[i] = json.dumps(data, separators=(",", ":"))
            return lines

        _edit_line(commits[0]["files"], 2, change)  # seq 3, its own hash recomputed
        return commits

    rewrite_history(_repo(store), DEFAULT_REF, edit)
    result = store.verify()
    assert not result.ok
    assert result.first_break.seq == 4
    assert "prev_hash" in result.first_break.reason


def test_deleted_event_is_named(store):
    def edit(commits):
        _edit_line(commits[2]["files"], 3, lambda lines, i: lines[:i] + lines[i + 1 :])
        return commits

    rewrite_history(_repo(store), DEFAULT_REF, edit)
    result = store.verify()
    assert not result.ok
    assert result.first_break.seq == 25  # found 25 where 24 was expected
    assert "expected seq 24" in result.first_break.reason


def test_reordered_events_are_named(store):
    def edit(commits):
        def swap(lines, i):
            lines[i], lines[i + 1] = lines[i + 1], lines[i]
            return lines

        _edit_line(commits[0]["files"], 6, swap)
        return commits

    rewrite_history(_repo(store), DEFAULT_REF, edit)
    result = store.verify()
    assert not result.ok
    assert result.first_break.seq == 8
    assert "expected seq 7" in result.first_break.reason


def test_deleted_commit_is_named(store):
    rewrite_history(_repo(store), DEFAULT_REF, lambda commits: [commits[0], commits[2]])
    result = store.verify()
    assert not result.ok
    assert result.first_break.seq == 21
    assert "previous commit ended at 10" in result.first_break.reason
    assert result.first_break.where.startswith("commit ")


def test_reordered_commits_are_named(store):
    rewrite_history(_repo(store), DEFAULT_REF, lambda c: [c[0], c[2], c[1]])
    result = store.verify()
    assert not result.ok
    assert "starts at seq 21 but the previous commit ended at 10" in result.first_break.reason


def test_edited_commit_trailer_is_named(store):
    def edit(commits):
        commits[1]["message"] = commits[1]["message"].replace(
            "Plangate-Audit-Head: sha256:", "Plangate-Audit-Head: sha256:0"
        )[:-1]
        return commits

    rewrite_history(_repo(store), DEFAULT_REF, edit)
    result = store.verify()
    assert not result.ok
    assert result.first_break.seq == 20
    assert "Plangate-Audit-Head" in result.first_break.reason


def test_commit_modifying_a_segment_is_named(store):
    repo = _repo(store)
    seg = store.segments()[0]
    data = store._read_blob(seg.blob).replace(b'"note":"ok"', b'"note":"ko"', 1)
    tampered = build_commit(repo, store.tip(), store.commit_chain()[-1].message, {seg.path: data})
    repo.git.update_ref(DEFAULT_REF, tampered)
    result = store.verify()
    assert not result.ok
    assert f"modifies {seg.path}" in result.first_break.reason
    assert result.first_break.where == f"commit {tampered[:12]}"


def test_commit_deleting_a_segment_is_named(store):
    repo = _repo(store)
    seg = store.segments()[1]
    tampered = build_commit(repo, store.tip(), "cleanup", remove=(seg.path,))
    repo.git.update_ref(DEFAULT_REF, tampered)
    result = store.verify()
    assert not result.ok
    assert f"deletes {seg.path}" in result.first_break.reason


def test_foreign_file_on_the_audit_ref_is_named(store):
    repo = _repo(store)
    tampered = build_commit(repo, store.tip(), "x", {"notes.txt": b"hi\n"})
    repo.git.update_ref(DEFAULT_REF, tampered)
    result = store.verify()
    assert not result.ok
    assert "notes.txt" in result.first_break.reason


def test_rewritten_history_detected_by_the_anchor(store):
    """A wholesale rewrite (every hash recomputed) is caught by the last verified tip."""
    assert store.verify().ok
    good_tip = store.tip()
    # drop the last commit entirely: the remaining history is self-consistent
    rewrite_history(_repo(store), DEFAULT_REF, lambda c: c[:2])
    result = store.verify()
    assert not result.ok
    assert "history was rewritten" in result.first_break.reason
    assert good_tip[:12] in result.first_break.where


def test_expect_commit_pins_history(store):
    tip = store.tip()
    assert store.verify(expect_commit=tip).ok
    (store.state_dir / "verified.json").unlink()
    rewrite_history(_repo(store), DEFAULT_REF, lambda c: c[:2])
    assert store.verify().ok  # self-consistent, and no anchor recorded ...
    result = store.verify(expect_commit=tip)  # ... but the pinned commit is gone
    assert not result.ok
    assert "--expect-commit" in result.first_break.reason


def test_journal_events_are_verified_too(store):
    store.append([draft(99)])
    assert store.verify().ok
    path = store.state_dir / "journal.jsonl"
    path.write_text(path.read_text().replace('"note":"ok"', '"note":"ko"'))
    result = GitAuditStore(store._repo.working_dir).verify()
    assert not result.ok
    assert result.first_break.seq == 31
    assert result.first_break.where == "journal:1"


def test_invalid_json_line_is_named(store):
    def edit(commits):
        _edit_line(commits[0]["files"], 0, lambda lines, i: ["{not json", *lines[1:]])
        return commits

    rewrite_history(_repo(store), DEFAULT_REF, edit)
    result = store.verify()
    assert not result.ok
    assert "not valid JSON" in result.first_break.reason
    assert result.first_break.seq == 1


# -- the pure chain, property-tested ----------------------------------------------------------


def _records(n: int) -> list[tuple[str, dict]]:
    events = chain([draft(i) for i in range(n)], InMemoryAuditStore().head())
    return [(f"#{e.seq}", e.model_dump(mode="json", exclude_none=True)) for e in events]


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(min_value=2, max_value=12),
    data=st.data(),
    kind=st.sampled_from(["edit", "delete", "swap", "duplicate"]),
)
def test_any_single_tampering_is_detected_at_the_first_affected_event(n, data, kind):
    records = _records(n)
    k = data.draw(st.integers(min_value=0, max_value=n - 2 if kind == "swap" else n - 1))
    if kind == "edit":
        records[k][1]["payload"] = {"i": -1}
        expected = k + 1
    elif kind == "delete":
        del records[k]
        expected = k + 2 if k < n - 1 else None
    elif kind == "swap":
        records[k], records[k + 1] = records[k + 1], records[k]
        expected = k + 2
    else:
        records.insert(k + 1, records[k])
        expected = k + 1
    result = verify_records(records)
    if expected is None:  # deleting the last event needs an anchor (covered above)
        assert result.ok and result.head.seq == n - 1
        return
    assert not result.ok
    assert result.first_break.seq == expected
    assert result.count == (k + 1 if kind == "duplicate" else k)


def test_event_moved_between_segments_is_named(store):
    """Same events, same order, but a segment holds more lines than its name says."""

    def edit(commits):
        first = next(iter(commits[0]["files"]))
        second = next(iter(commits[1]["files"]))
        moved, *rest = commits[1]["files"][second].decode().splitlines()
        commits[0]["files"][first] += (moved + "\n").encode()
        commits[1]["files"][second] = ("\n".join(rest) + "\n").encode()
        return commits

    rewrite_history(_repo(store), DEFAULT_REF, edit)
    result = store.verify()
    assert not result.ok
    assert result.first_break.seq == 11
    assert "outside the seq range" in result.first_break.reason
