"""Verification of a ``GitAuditStore``: the commits and the hash chain (adapter).

Why both: the hash chain proves the *events* were not edited, deleted, inserted or reordered;
the commit checks prove the *history* only ever grew. For every commit on the audit ref, from
the root, in first-parent order:

1. it has at most one parent (the ref is linear) and touches nothing outside ``events/``;
2. every segment file of its parent is still there with the same blob (nothing was modified
   or deleted: a rewritten history shows up as a modified segment);
3. the segments it adds are named ``events/YYYY-MM/<first>-<last>.jsonl`` and tile exactly
   the seq range of its trailers, right after the previous commit's range (a reordered or
   dropped commit leaves a gap or an overlap);
4. its ``Plangate-Audit-Head`` trailer equals the hash of its last event.

Then every event is re-hashed in seq order (``app.audit.events.verify_records``), the journal's
acknowledged-but-uncommitted events included. Finally, history that was rewritten wholesale
(every hash recomputed) is caught by an *anchor*: a commit known to be good must still be an
ancestor of the tip. ``verify`` remembers the tip of each successful run in the store's state
directory (``verified.json``) and checks it next time; ``expect_commit`` pins one explicitly
(e.g. the SHA on the protected remote). Without any anchor a wholesale rewrite of a local-only
clone cannot be told apart from the real thing — push the ref somewhere others can see.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.audit.events import ChainBreak, ChainHead, VerifyResult, verify_records
from app.observability import metrics

if TYPE_CHECKING:
    from app.audit.git_store import GitAuditStore

__all__ = ["read_anchor", "verify_store", "write_anchor"]

_ANCHOR_FILE = "verified.json"


@dataclass(slots=True)
class _Anomaly:
    brk: ChainBreak | None = None


def read_anchor(store: GitAuditStore) -> str | None:
    """The tip of the last successful verify, if recorded."""
    path = store.state_dir / _ANCHOR_FILE
    try:
        return str(json.loads(path.read_text())["tip"])
    except (FileNotFoundError, KeyError, ValueError, TypeError):
        return None


def write_anchor(store: GitAuditStore, tip: str | None) -> None:
    path = store.state_dir / _ANCHOR_FILE
    if tip is None:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"tip": tip}))
    tmp.replace(path)


def _fail(count: int, brk: ChainBreak) -> VerifyResult:
    metrics.AUDIT_VERIFY_OK.set(0)
    return VerifyResult(count, ChainHead(), brk)


def verify_store(
    store: GitAuditStore, *, expect_commit: str | None = None, remember: bool = True
) -> VerifyResult:
    """Verify commits, chain and anchors; return the first break (see module docstring)."""
    from app.audit.git_store import _SEGMENT_RE, Segment

    tip = store.tip()
    for label, anchor in (
        ("--expect-commit", expect_commit),
        ("last verified tip", read_anchor(store)),
    ):
        if anchor and (tip is None or not store.is_ancestor(anchor, tip)):
            return _fail(
                0,
                ChainBreak(
                    None,
                    f"commit {anchor[:12]}",
                    f"the {label} {anchor[:12]} is no longer in the history of {store.ref}: "
                    "history was rewritten",
                ),
            )

    commits = store.commit_chain()
    months: dict[str, tuple[str, dict[str, str]]] = {}
    added_by: dict[str, str] = {}
    heads: dict[int, tuple[str, str]] = {}
    last_seq = 0
    for commit in commits:
        short = commit.hexsha[:12]
        where = f"commit {short}"
        if len(commit.parents) > 1:
            return _fail(0, ChainBreak(None, where, "is a merge commit; the ref must be linear"))
        for item in commit.tree:
            if item.path != "events" or item.type != "tree":
                return _fail(
                    0, ChainBreak(None, where, f"adds {item.path!r} outside events/ (not ours)")
                )
        new_months: dict[str, tuple[str, dict[str, str]]] = {}
        added: list[Segment] = []
        events_tree = commit.tree / "events" if "events" in commit.tree else None
        month_trees = {t.name: t for t in events_tree.trees} if events_tree else {}
        if events_tree is not None and events_tree.blobs:
            stray = events_tree.blobs[0].path
            return _fail(0, ChainBreak(None, where, f"adds {stray!r}, not a segment file"))
        for name, tree in month_trees.items():
            old = months.get(name)
            if old and old[0] == tree.hexsha:
                new_months[name] = old
                continue
            files: dict[str, str] = {}
            for item in tree:
                m = _SEGMENT_RE.match(item.path)
                if item.type != "blob" or not m:
                    return _fail(
                        0, ChainBreak(None, where, f"adds {item.path!r}, not a segment file")
                    )
                files[item.path] = item.hexsha
                if old is None or item.path not in old[1]:
                    added.append(Segment(item.path, int(m[2]), int(m[3]), item.hexsha))
            new_months[name] = (tree.hexsha, files)
        for name, (_, old_files) in months.items():
            now_files = new_months.get(name, ("", {}))[1]
            for path, blob in old_files.items():
                if path not in now_files:
                    return _fail(
                        0,
                        ChainBreak(_first_seq(path), where, f"deletes {path} (events removed)"),
                    )
                if now_files[path] != blob:
                    return _fail(
                        0,
                        ChainBreak(
                            _first_seq(path),
                            where,
                            f"modifies {path}, committed earlier in "
                            f"{added_by.get(path, '?')} (history rewritten)",
                        ),
                    )
        trailers = store._trailers(str(commit.message))
        try:
            first_t, last_t = int(trailers["First-Seq"]), int(trailers["Last-Seq"])
            head_t = trailers["Head"]
        except (KeyError, ValueError):
            return _fail(0, ChainBreak(None, where, "has no Plangate-Audit trailers (not ours)"))
        if first_t != last_seq + 1:
            return _fail(
                0,
                ChainBreak(
                    first_t,
                    where,
                    f"starts at seq {first_t} but the previous commit ended at {last_seq} "
                    "(a commit was removed, reordered or rewritten)",
                ),
            )
        added.sort(key=lambda s: s.first)
        expect = first_t
        for seg in added:
            if seg.first != expect or seg.last < seg.first:
                return _fail(
                    0,
                    ChainBreak(
                        expect, where, f"adds {seg.path}, expected a segment starting at {expect}"
                    ),
                )
            expect = seg.last + 1
            added_by[seg.path] = short
        if expect - 1 != last_t:
            return _fail(
                0,
                ChainBreak(
                    last_t, where, f"trailers say seq {first_t}-{last_t}, files end at {expect - 1}"
                ),
            )
        heads[last_t] = (head_t, short)
        last_seq = last_t
        months = new_months

    segments = store.segments(tip)
    anomaly = _Anomaly()
    _, pending = _pending_entries(store, tip)

    def records() -> Iterator[tuple[str, Any]]:
        # Raw lines, so verify_records can take its fast path (see events._line_hash). Code
        # after each ``yield`` runs only if verify_records accepted that record, i.e. its seq
        # was the next one in the global chain.
        for seg in segments:
            commit_short = added_by.get(seg.path, "?")
            expected = seg.first
            for lineno, line in enumerate(store._blob_lines(seg.blob), start=1):
                where = f"{seg.path}:{lineno} (commit {commit_short})"
                if expected > seg.last:
                    anomaly.brk = ChainBreak(
                        expected, where, f"is outside the seq range of {seg.path}"
                    )
                    return
                yield where, line
                claimed = heads.get(expected)
                if claimed:
                    actual = json.loads(line).get("hash")
                    if claimed[0] != actual:
                        anomaly.brk = ChainBreak(
                            expected,
                            f"commit {claimed[1]}",
                            f"trailer Plangate-Audit-Head {claimed[0]} does not match event "
                            f"{expected} ({actual})",
                        )
                        return
                expected += 1
            if expected != seg.last + 1:
                anomaly.brk = ChainBreak(
                    expected,
                    f"{seg.path} (commit {commit_short})",
                    f"ends before seq {seg.last} (events deleted)",
                )
                return
        for i, entry in enumerate(pending, start=1):
            yield f"journal:{i}", entry.line

    result = verify_records(records())
    if result.ok and anomaly.brk is not None:
        result = VerifyResult(result.count, result.head, anomaly.brk)
    if result.ok and result.head.seq < last_seq:
        result = VerifyResult(
            result.count,
            result.head,
            ChainBreak(result.head.seq + 1, "events/", "events listed in commits are missing"),
        )
    if result.ok and remember:
        write_anchor(store, tip)
    metrics.AUDIT_VERIFY_OK.set(1 if result.ok else 0)
    return result


def _pending_entries(store: GitAuditStore, tip: str | None) -> tuple[ChainHead, list[Any]]:
    with store._locked():
        return store._pending(tip)


def _first_seq(path: str) -> int | None:
    name = path.rsplit("/", 1)[-1]
    try:
        return int(name.split("-", 1)[0])
    except ValueError:
        return None
