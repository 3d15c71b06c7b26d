"""``GitAuditStore``: the audit trail as append-only commits on a dedicated git ref (adapter).

Layout. Events live on ``refs/heads/plangate/audit`` (configurable) of a given repository, never
on the branch people work on, and the working tree is never touched: commits are built with git
plumbing (blobs, a private index file, ``commit-tree``, compare-and-swap ``update-ref``). Each
commit *adds* JSON Lines segment files ``events/YYYY-MM/<first seq>-<last seq>.jsonl`` (month of
the event timestamp, 12-digit zero-padded seqs) and never modifies or deletes one. Its message
summarises the batch and ends with trailers binding the commit to the hash chain::

    Plangate-Audit-First-Seq: 1001
    Plangate-Audit-Last-Seq: 2000
    Plangate-Audit-Head: sha256:<hash of event 2000>

Crash safety. ``append()`` takes an exclusive ``fcntl`` lock (shared by every process using the
same repository and ref), chains the drafts after the acknowledged head, appends them to a
write-ahead journal (``<git dir>/plangate-audit/<ref>/journal.jsonl``) and fsyncs before it
returns: an acknowledged event survives a crash. ``commit()`` (same lock) writes the pending
journal events as one commit, moves the ref with compare-and-swap, then truncates the journal.
A crash between the ref update and the truncation leaves events in the journal that are already
committed; they are recognised (same seq, same hash) and dropped. A torn last journal line (a
crash during the write, before the fsync returned) was never acknowledged and is discarded.

Concurrency. Two processes appending to the same store serialise on the lock; each append sees
the other's journal entries, so the chain stays linear and no event is lost.

Push (Actions). ``push(remote)`` commits, then pushes the ref; if the remote moved on
(non-fast-forward), it fetches the remote ref, re-chains the local-only events after the
remote head (new ``seq``/``prev_hash``/``hash``, same content) in a new commit on top of the
remote tip, and pushes again (tenacity, bounded attempts). Published history is never rewritten.

Must not: rewrite or force-push the ref, touch the working tree or the user's index.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

import git
from git.exc import BadName, GitCommandError, InvalidGitRepositoryError, NoSuchPathError
from gitdb.base import IStream
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from app.audit.errors import AuditError
from app.audit.events import (
    AuditEvent,
    AuditEventDraft,
    ChainHead,
    VerifyResult,
    chain,
    chain_records,
)
from app.audit.query import AuditQuery
from app.observability import metrics

if TYPE_CHECKING:
    from app.audit.index import AuditIndex

__all__ = ["DEFAULT_REF", "GitAuditStore", "Segment"]

log = logging.getLogger(__name__)

DEFAULT_REF = "refs/heads/plangate/audit"
_ZERO = "0" * 40
_SEGMENT_RE = re.compile(r"^events/(\d{4}-\d{2})/(\d{12})-(\d{12})\.jsonl$")
_TRAILER_RE = re.compile(r"^Plangate-Audit-(First-Seq|Last-Seq|Head): (\S+)$", re.MULTILINE)
_DRAFT_FIELDS = frozenset(AuditEventDraft.model_fields)


@dataclass(frozen=True, slots=True)
class Segment:
    """One committed segment file: ``path`` holds events ``first``..``last`` (inclusive)."""

    path: str
    first: int
    last: int
    blob: str


@dataclass(frozen=True, slots=True)
class _Entry:
    """One journal line: the parsed event plus its exact text."""

    seq: int
    hash: str
    line: str
    data: dict[str, Any]


def _open_when_ready(path: Path) -> git.Repo:
    """Open a repository another process is initialising (bounded: 40 tries, 50 ms apart)."""
    retrying = Retrying(
        stop=stop_after_attempt(40),
        wait=lambda _state: 0.05,
        retry=retry_if_exception_type((InvalidGitRepositoryError, NoSuchPathError)),
        reraise=True,
    )
    return retrying(git.Repo, path)


class _Rejected(Exception):
    """The remote refused a push because it moved on (non-fast-forward)."""


class GitAuditStore:
    """Audit events on a git ref. See the module docstring for layout and guarantees."""

    def __init__(
        self,
        repo_path: str | os.PathLike[str],
        *,
        ref: str = DEFAULT_REF,
        batch_size: int = 1000,
        state_dir: str | os.PathLike[str] | None = None,
        index_path: str | os.PathLike[str] | None = None,
        committer: tuple[str, str] = ("Plangate audit", "plangate-audit@localhost"),
        create: bool = False,
    ) -> None:
        if not ref.startswith("refs/"):
            raise AuditError(f"audit ref {ref!r} must be a full ref name such as {DEFAULT_REF}")
        if batch_size < 1:
            raise AuditError(f"batch_size must be at least 1, got {batch_size}")
        path = Path(repo_path)
        try:
            self._repo = git.Repo(path, search_parent_directories=True)
        except (InvalidGitRepositoryError, NoSuchPathError) as exc:
            if not create:
                raise AuditError(
                    f"{path}: not a git repository",
                    hint="point --repo at a git repository (the audit trail lives on the "
                    f"{DEFAULT_REF} ref) or run `git init` there",
                ) from exc
            path.mkdir(parents=True, exist_ok=True)
            try:
                self._repo = git.Repo.init(path, bare=True)
            except GitCommandError:
                # another process creates the same audit repository right now (two runs started
                # at once on a fresh --audit-repo): use it once its initialisation is complete
                self._repo = _open_when_ready(path)
        self.ref = ref
        self.batch_size = batch_size
        self._committer = committer
        git_dir = Path(self._repo.git_dir)
        self.state_dir = (
            Path(state_dir)
            if state_dir
            else git_dir / "plangate-audit" / (ref.removeprefix("refs/").replace("/", "__"))
        )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.index_path = Path(index_path) if index_path else self.state_dir / "index.sqlite"
        self._journal_path = self.state_dir / "journal.jsonl"
        self._lock_fd = os.open(self.state_dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        self._lock_depth = 0
        self._thread_lock = threading.RLock()
        self._journal_cache: tuple[bytes, int, list[_Entry]] | None = None
        self._head_cache: dict[str, ChainHead] = {}
        self._index: AuditIndex | None = None

    # ------------------------------------------------------------------ locking

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive across processes (flock) and threads; re-entrant within one store."""
        with self._thread_lock:
            if self._lock_depth == 0:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
                if self._lock_depth == 0:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Release the lock file descriptor and git helper processes."""
        if self._index is not None:
            self._index.close()
            self._index = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
        self._repo.close()

    def __enter__(self) -> GitAuditStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ git reading

    def tip(self) -> str | None:
        """The commit SHA the audit ref points at, or None before the first commit."""
        try:
            return git.SymbolicReference.dereference_recursive(self._repo, self.ref)
        except ValueError:
            return None

    def _commit(self, sha: str) -> git.Commit:
        return self._repo.commit(sha)

    @staticmethod
    def _trailers(message: str) -> dict[str, str]:
        return dict(_TRAILER_RE.findall(message))

    def _committed_head(self, tip: str | None) -> ChainHead:
        if tip is None:
            return ChainHead()
        cached = self._head_cache.get(tip)
        if cached is not None:
            return cached
        trailers = self._trailers(str(self._commit(tip).message))
        try:
            head = ChainHead(int(trailers["Last-Seq"]), trailers["Head"])
        except (KeyError, ValueError) as exc:
            raise AuditError(
                f"{self.ref} tip {tip[:12]} was not written by Plangate (no audit trailers)",
                hint="run `plangate audit verify`; never commit to the audit ref by hand",
            ) from exc
        self._head_cache[tip] = head
        return head

    def segments(self, tip: str | None = None) -> list[Segment]:
        """Committed segment files at ``tip`` (default: the ref), in seq order."""
        tip = tip if tip is not None else self.tip()
        if tip is None:
            return []
        return self._segments_of_tree(self._commit(tip).tree)

    @staticmethod
    def _segments_of_tree(tree: git.Tree) -> list[Segment]:
        found: list[Segment] = []
        try:
            events = tree / "events"
        except KeyError:
            return []
        for month in events.trees:
            for blob in month.blobs:
                m = _SEGMENT_RE.match(blob.path)
                if m:
                    found.append(Segment(blob.path, int(m[2]), int(m[3]), blob.hexsha))
        found.sort(key=lambda s: s.first)
        return found

    def _read_blob(self, sha: str) -> bytes:
        return self._repo.odb.stream(bytes.fromhex(sha)).read()

    def _blob_lines(self, sha: str) -> list[str]:
        """The lines of a segment. Split on "\\n" only: U+2028 and friends are legal, unescaped,
        inside JSON strings. Undecodable bytes become U+FFFD, so verify reports an edit."""
        lines = self._read_blob(sha).decode("utf-8", errors="replace").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        return lines

    def _segment_records(
        self, segments: Sequence[Segment], after_seq: int = 0, *, strict: bool = True
    ) -> Iterator[tuple[str, Any]]:
        """``(path:line, parsed record)``; with ``strict=False`` unparsable lines come as text."""
        for seg in segments:
            if seg.last <= after_seq:
                continue
            for lineno, line in enumerate(self._blob_lines(seg.blob), start=1):
                try:
                    data = json.loads(line)
                except json.JSONDecodeError as exc:
                    if strict:
                        raise AuditError(
                            f"{seg.path}:{lineno} is not valid JSON ({exc.msg})",
                            hint="run `plangate audit verify`: the audit trail was tampered with",
                        ) from exc
                    yield f"{seg.path}:{lineno}", line
                    continue
                seq = data.get("seq") if isinstance(data, dict) else None
                if isinstance(seq, int) and seq <= after_seq:
                    continue
                yield f"{seg.path}:{lineno}", data

    # ------------------------------------------------------------------ journal

    def _read_journal(self) -> list[_Entry]:
        """Journal entries (call under the lock). Drops a torn last line.

        Cached incrementally: if the file still starts with the same first line (which holds a
        unique seq and hash) and has only grown, only the new bytes are read. Another process
        may have committed and truncated it in between; then the first line differs.
        """
        if not self._journal_path.exists():  # no race: we hold the lock
            self._journal_cache = None
            return []
        with open(self._journal_path, "rb") as fh:
            first = fh.readline()
            size = os.fstat(fh.fileno()).st_size
            cache = self._journal_cache
            if cache and cache[0] == first and cache[1] == size:
                return cache[2]
            if cache and cache[0] == first and cache[1] < size:
                offset, entries = cache[1], list(cache[2])
            else:
                offset, entries = 0, []
            fh.seek(offset)
            data = fh.read()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            # A torn write: the appender crashed before fsync returned, so it was never
            # acknowledged. Cut it off so the next append starts on a clean line.
            log.warning("audit journal: discarding a torn last line (%d bytes)", len(data) - end)
            os.truncate(self._journal_path, offset + end)
            data = data[:end]
            if offset == 0:
                first = data[: data.find(b"\n") + 1] if data else b""
        for raw in data.split(b"\n"):
            if not raw.strip():
                continue
            line = raw.decode("utf-8")
            obj = json.loads(line)
            entries.append(_Entry(obj["seq"], obj["hash"], line, obj))
        self._journal_cache = (first, offset + len(data), entries)
        return entries

    def _write_journal(self, lines: Sequence[str]) -> None:
        payload = ("\n".join(lines) + "\n").encode("utf-8")
        created = not self._journal_path.exists()
        fd = os.open(self._journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:  # a new file is durable only once its directory entry is
            dir_fd = os.open(self.state_dir, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def _extend_journal_cache(
        self, records: Sequence[tuple[AuditEvent, str, dict[str, Any]]]
    ) -> None:
        """We just appended these lines under the lock: no need to read them back."""
        cache = self._journal_cache
        lines = [line for _, line, _ in records]
        written = len(("\n".join(lines) + "\n").encode("utf-8"))
        size = os.stat(self._journal_path).st_size
        entries = [_Entry(e.seq, e.hash, line, body) for e, line, body in records]
        if cache is not None and cache[1] + written == size:
            self._journal_cache = (cache[0], size, cache[2] + entries)
        elif size == written:
            self._journal_cache = ((lines[0] + "\n").encode("utf-8"), size, entries)
        else:
            self._journal_cache = None

    def _clear_journal(self) -> None:
        fd = os.open(self._journal_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self._journal_cache = None

    def _pending(self, tip: str | None) -> tuple[ChainHead, list[_Entry]]:
        """(committed head, journal entries not yet committed, chained after that head)."""
        committed = self._committed_head(tip)
        entries = self._read_journal()
        if not entries:
            return committed, []
        stale = [e for e in entries if e.seq <= committed.seq]
        fresh = [e for e in entries if e.seq > committed.seq]
        if stale:
            # Normally: committed just before a crash, journal not yet truncated. Check that
            # they really are in git; any that are not get re-chained, never dropped.
            in_git = {
                d["seq"]: d.get("hash")
                for _, d in self._segment_records(self.segments(tip), stale[0].seq - 1)
            }
            missing = [e for e in stale if in_git.get(e.seq) != e.hash]
            if missing:
                log.warning(
                    "audit journal: %d acknowledged events are not on %s; re-chaining them",
                    len(missing),
                    self.ref,
                )
                fresh = missing + fresh
        if fresh and (
            fresh[0].seq != committed.seq + 1 or fresh[0].data.get("prev_hash") != (committed.hash)
        ):
            fresh = self._rechain([e.data for e in fresh], committed)
        return committed, fresh

    def _rechain(self, records: Sequence[dict[str, Any]], head: ChainHead) -> list[_Entry]:
        drafts = [
            AuditEventDraft.model_validate({k: v for k, v in r.items() if k in _DRAFT_FIELDS})
            for r in records
        ]
        return [self._entry(e) for e in chain(drafts, head)]

    @staticmethod
    def _entry(event: AuditEvent) -> _Entry:
        line = event.to_json_line()
        return _Entry(event.seq, event.hash, line, json.loads(line))

    # ------------------------------------------------------------------ the AuditStore API

    def head(self) -> ChainHead:
        """The last acknowledged event (journal included)."""
        with self._locked():
            committed, pending = self._pending(self.tip())
            return ChainHead(pending[-1].seq, pending[-1].hash) if pending else committed

    @property
    def pending(self) -> int:
        """Acknowledged events not yet committed."""
        with self._locked():
            return len(self._pending(self.tip())[1])

    def append(self, drafts: Sequence[AuditEventDraft]) -> list[AuditEvent]:
        """Chain ``drafts`` after the head, journal + fsync them; commit every ``batch_size``."""
        if not drafts:
            return []
        with self._locked():
            committed, pending = self._pending(self.tip())
            head = ChainHead(pending[-1].seq, pending[-1].hash) if pending else committed
            records = chain_records(list(drafts), head)
            events = [event for event, _, _ in records]
            lines = [line for _, line, _ in records]
            self._write_journal(lines)
            self._extend_journal_cache(records)
            for kind, count in Counter(e.type for e in events).items():
                metrics.AUDIT_EVENTS.labels(type=kind).inc(count)
            metrics.AUDIT_JOURNAL_PENDING.set(len(pending) + len(events))
            if len(pending) + len(events) >= self.batch_size:
                self.commit()
            return events

    def flush(self) -> str | None:
        return self.commit()

    def commit(self, message: str | None = None) -> str | None:
        """Commit every pending journal event in one commit; returns its SHA (None if none)."""
        with self._locked():
            tip = self.tip()
            committed, pending = self._pending(tip)
            if not pending:
                if self._journal_path.exists() and self._journal_path.stat().st_size:
                    self._clear_journal()
                return None
            sha = self._write_commit(tip, committed, pending, message)
            self._clear_journal()
            metrics.AUDIT_COMMITS.inc()
            metrics.AUDIT_JOURNAL_PENDING.set(0)
            return sha

    def _write_commit(
        self,
        tip: str | None,
        committed: ChainHead,
        pending: Sequence[_Entry],
        note: str | None,
        *,
        expected_old: str | None = None,
    ) -> str:
        """Write ``pending`` as one commit on ``tip`` and move the ref (compare-and-swap)."""
        files: list[tuple[str, bytes]] = []
        run: list[_Entry] = []
        for entry in pending:
            month = str(entry.data["timestamp"])[:7]
            if run and str(run[0].data["timestamp"])[:7] != month:
                files.append(self._segment_file(run))
                run = []
            run.append(entry)
        files.append(self._segment_file(run))
        odb = self._repo.odb
        cacheinfo: list[str] = []
        for path, data in files:
            istream = odb.store(IStream(b"blob", len(data), BytesIO(data)))
            sha = istream.hexsha.decode()
            self._fsync_object(sha)
            cacheinfo += ["--cacheinfo", f"100644,{sha},{path}"]
        env = {
            # The journal is cleared once the ref moved, so the commit must survive a power
            # cut first: git fsyncs the trees, the commit and the ref it writes (git >= 2.36).
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "core.fsync",
            "GIT_CONFIG_VALUE_0": "all",
            "GIT_INDEX_FILE": str(self.state_dir / "commit-index"),
            "GIT_AUTHOR_NAME": self._committer[0],
            "GIT_AUTHOR_EMAIL": self._committer[1],
            "GIT_COMMITTER_NAME": self._committer[0],
            "GIT_COMMITTER_EMAIL": self._committer[1],
        }
        g = self._repo.git
        try:
            if tip:
                g.read_tree(tip, env=env)
            else:
                g.read_tree("--empty", env=env)
            g.update_index("--add", *cacheinfo, env=env)
            tree = g.write_tree(env=env)
            message = _summary(pending, committed, note)
            args = [tree, "-m", message] + (["-p", tip] if tip else [])
            new = g.commit_tree(*args, env=env)
            old = expected_old or tip or _ZERO
            g.update_ref("-m", "plangate audit: append", self.ref, new, old)
        except GitCommandError as exc:
            raise AuditError(
                f"cannot commit {len(pending)} audit events to {self.ref}: "
                f"{exc.stderr.strip() or exc}",
                hint="the events stay in the journal; fix the repository and run "
                "`plangate audit commit` (or the next run commits them)",
            ) from exc
        self._head_cache[new] = ChainHead(pending[-1].seq, pending[-1].hash)
        return new

    def _fsync_object(self, sha: str) -> None:
        """Flush a loose object gitdb just wrote (gitdb does not fsync)."""
        path = Path(self._repo.git_dir) / "objects" / sha[:2] / sha[2:]
        if not path.exists():  # already packed, or stored before: durable already
            return
        for target, flags in ((path, os.O_RDONLY), (path.parent, os.O_RDONLY | os.O_DIRECTORY)):
            fd = os.open(target, flags)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    @staticmethod
    def _segment_file(run: Sequence[_Entry]) -> tuple[str, bytes]:
        month = str(run[0].data["timestamp"])[:7]
        path = f"events/{month}/{run[0].seq:012d}-{run[-1].seq:012d}.jsonl"
        return path, ("\n".join(e.line for e in run) + "\n").encode("utf-8")

    def records(self, after_seq: int = 0) -> Iterator[tuple[str, dict[str, Any]]]:
        """Stored records ``(where, raw dict)`` with ``seq > after_seq``: git, then journal."""
        with self._locked():
            tip = self.tip()
            _, pending = self._pending(tip)
            segments = self.segments(tip)
        yield from self._segment_records(segments, after_seq)
        for i, entry in enumerate(pending, start=1):
            if entry.seq > after_seq:
                yield f"journal:{i}", entry.data

    def lines(self, after_seq: int = 0) -> Iterator[tuple[dict[str, Any], str]]:
        """``(record, stored line)`` with ``seq > after_seq`` (for the index)."""
        with self._locked():
            tip = self.tip()
            _, pending = self._pending(tip)
            segments = self.segments(tip)
        for seg in segments:
            if seg.last <= after_seq:
                continue
            for _where, data, line in self._segment_lines(seg):
                if data["seq"] > after_seq:
                    yield data, line
        for entry in pending:
            if entry.seq > after_seq:
                yield entry.data, entry.line

    def _segment_lines(self, seg: Segment) -> Iterator[tuple[str, dict[str, Any], str]]:
        for lineno, line in enumerate(self._blob_lines(seg.blob), start=1):
            where = f"{seg.path}:{lineno}"
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                raise AuditError(
                    f"{where} is not valid JSON ({exc.msg})",
                    hint="run `plangate audit verify`: the audit trail was tampered with",
                ) from exc
            if not isinstance(data, dict) or not isinstance(data.get("seq"), int):
                raise AuditError(
                    f"{where} is not an audit event",
                    hint="run `plangate audit verify`: the audit trail was tampered with",
                )
            yield where, data, line

    def events(self, after_seq: int = 0) -> Iterator[AuditEvent]:
        for _, data in self.records(after_seq):
            yield AuditEvent.model_validate(data)

    def query(self, query: AuditQuery) -> list[AuditEvent]:
        """Answered from the SQLite index, refreshed from git first (git is the truth)."""
        from app.audit.index import AuditIndex  # adapter; imported lazily

        with self._thread_lock:
            if self._index is None:
                self._index = AuditIndex(self.index_path)
            self._index.sync(self)
            return self._index.query(query)

    def record_at(self, seq: int) -> dict[str, Any] | None:
        """The stored record with this ``seq`` (None if there is none)."""
        for _, data in self.records(seq - 1):
            return data if data.get("seq") == seq else None
        return None

    # ------------------------------------------------------------------ verification

    def verify(self, *, expect_commit: str | None = None) -> VerifyResult:
        """Check commits and recompute the hash chain. See ``app.audit.verify_git``."""
        from app.audit.verify_git import verify_store

        return verify_store(self, expect_commit=expect_commit)

    def commit_chain(self) -> list[git.Commit]:
        """Commits of the audit ref from the root, first-parent order."""
        tip = self.tip()
        if tip is None:
            return []
        return list(self._repo.iter_commits(tip, first_parent=True, reverse=True))

    def is_ancestor(self, older: str, newer: str) -> bool:
        try:
            return self._repo.is_ancestor(older, newer)
        except (GitCommandError, BadName, ValueError):
            return False

    # ------------------------------------------------------------------ push

    def push(
        self,
        remote: str = "origin",
        *,
        attempts: int = 5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> str | None:
        """Commit pending events and push the ref; on non-fast-forward fetch, re-chain, retry.

        Returns the pushed tip. Raises ``AuditError`` when every attempt failed.
        """
        with self._locked():
            self.commit()
            retrying = Retrying(
                stop=stop_after_attempt(attempts),
                wait=wait_exponential_jitter(multiplier=0.2, max=5, jitter=0.5),
                retry=retry_if_exception_type((_Rejected, GitCommandError)),
                sleep=sleep,
                reraise=False,
            )
            try:
                for attempt in retrying:
                    with attempt:
                        self._push_once(remote)
            except RetryError as exc:
                cause = exc.last_attempt.exception()
                raise AuditError(
                    f"could not push {self.ref} to {remote} after {attempts} attempts: {cause}",
                    hint="the events are committed locally; run `plangate audit push` again",
                ) from cause
            return self.tip()

    def _tracking_ref(self, remote: str) -> str:
        return f"refs/plangate-audit/remotes/{remote}/" + self.ref.removeprefix("refs/")

    def _push_once(self, remote: str) -> None:
        tip = self.tip()
        if tip is None:
            return
        try:
            self._repo.git.push("--porcelain", remote, f"{self.ref}:{self.ref}")
            return
        except GitCommandError as exc:
            text = f"{exc.stdout}\n{exc.stderr}"
            if "rejected" not in text and "non-fast-forward" not in text:
                raise
        self._integrate_remote(remote)
        raise _Rejected(f"{remote} moved on; re-chained local events, pushing again")

    def _integrate_remote(self, remote: str) -> None:
        """Fetch the remote ref and put our local-only events on top of it."""
        tracking = self._tracking_ref(remote)
        self._repo.git.fetch(remote, f"+{self.ref}:{tracking}")
        remote_tip = git.SymbolicReference.dereference_recursive(self._repo, tracking)
        local_tip = self.tip()
        assert local_tip is not None
        if self.is_ancestor(local_tip, remote_tip):
            self._repo.git.update_ref(self.ref, remote_tip, local_tip)
            return
        bases = self._repo.merge_base(local_tip, remote_tip)
        base_head = self._committed_head(bases[0].hexsha) if bases else ChainHead()
        local_only = [d for _, d in self._segment_records(self.segments(local_tip), base_head.seq)]
        remote_head = self._committed_head(remote_tip)
        entries = self._rechain(local_only, remote_head)
        new = self._write_commit_on(remote_tip, local_tip, remote_head, entries)
        # A verify anchor on one of the replaced (never published) commits would now look like
        # a rewrite: move it back to the last published commit we share with the remote.
        from app.audit.verify_git import read_anchor, write_anchor

        anchor = read_anchor(self)
        if anchor and not self.is_ancestor(anchor, new):
            write_anchor(self, bases[0].hexsha if bases else None)
        log.info(
            "audit push: re-chained %d local events after remote seq %d (%s)",
            len(entries),
            remote_head.seq,
            new[:12],
        )

    def _write_commit_on(
        self, parent: str, expected_old: str, head: ChainHead, entries: Sequence[_Entry]
    ) -> str:
        """Like ``_write_commit`` but on ``parent`` while the ref still holds ``expected_old``."""
        # One compare-and-swap from our old tip: our unpublished commits are replaced by the
        # same events re-chained on top of the published history (never the published part).
        return self._write_commit(
            parent,
            head,
            entries,
            "re-chained after the remote moved on",
            expected_old=expected_old,
        )


def _summary(pending: Sequence[_Entry], committed: ChainHead, note: str | None) -> str:
    first, last = pending[0], pending[-1]
    types = Counter(str(e.data.get("type")) for e in pending)
    runs = Counter(str(e.data.get("correlation_id")) for e in pending)
    plans = Counter(str(e.data["plan_id"]) for e in pending if e.data.get("plan_id"))
    lines = [f"audit: {len(pending)} events, seq {first.seq}-{last.seq}", ""]
    if note:
        lines += [note, ""]

    def top(counter: Counter[str], limit: int = 8) -> str:
        items = [f"{k} ({v})" for k, v in counter.most_common(limit)]
        if len(counter) > limit:
            items.append(f"+{len(counter) - limit} more")
        return ", ".join(items)

    lines.append(f"runs: {top(runs)}")
    if plans:
        lines.append(f"plans: {top(plans)}")
    lines.append(f"types: {top(types, 25)}")
    lines += [
        "",
        f"Plangate-Audit-First-Seq: {first.seq}",
        f"Plangate-Audit-Last-Seq: {last.seq}",
        f"Plangate-Audit-Head: {last.hash}",
    ]
    return "\n".join(lines)
