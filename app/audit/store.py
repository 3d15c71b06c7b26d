"""The ``AuditStore`` port and its in-memory implementation (pure core).

How producers write (executor, GitHub App, CLI)::

    events = store.append([AuditEventDraft(type="run.started", timestamp=now, actor=...,
                                           correlation_id=run_id, plan_id=..., ...)])
    ...                       # more appends; cheap, durable once append() returns
    store.commit()            # at the end of a run phase: one git commit for the batch

* ``append(drafts)`` places the drafts at the end of the single hash chain, in order, and
  returns them as ``AuditEvent`` (with ``seq``, ``prev_hash``, ``hash``). When it returns, the
  events are *acknowledged*: a crash afterwards never loses them (the git store keeps a fsynced
  write-ahead journal until they are committed). It may commit by itself every ``batch_size``
  events so the journal stays small.
* ``commit(message=None)`` makes acknowledged events part of the durable history (a git commit
  for the git store) and returns an id for it (commit SHA), or ``None`` if nothing was pending.
  ``flush()`` is an alias. Never call it per event in a hot path.
* ``events(after_seq=0)`` iterates every acknowledged event with ``seq > after_seq`` in chain
  order; ``head()`` is the last one's ``ChainHead``; ``query(AuditQuery)`` filters.
* ``verify()`` recomputes the chain (and, for git, checks the commits) and returns a
  ``VerifyResult`` naming the first break.

Errors: ``AuditError`` (``app.audit.errors``) when storage cannot be read or written; invalid
drafts are rejected by pydantic before they reach a store. Nothing is ever rewritten.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

from app.audit.events import (
    AuditEvent,
    AuditEventDraft,
    ChainHead,
    VerifyResult,
    chain,
    verify_records,
)
from app.audit.query import AuditQuery

__all__ = ["AuditStore", "InMemoryAuditStore"]


@runtime_checkable
class AuditStore(Protocol):
    """Append-only, hash-chained event storage. See the module docstring for the contract."""

    def append(self, drafts: Sequence[AuditEventDraft]) -> list[AuditEvent]: ...

    def commit(self, message: str | None = None) -> str | None: ...

    def flush(self) -> str | None: ...

    def head(self) -> ChainHead: ...

    def events(self, after_seq: int = 0) -> Iterator[AuditEvent]: ...

    def query(self, query: AuditQuery) -> list[AuditEvent]: ...

    def verify(self) -> VerifyResult: ...


class InMemoryAuditStore:
    """The reference implementation, for tests and dry runs. Not durable, single process."""

    def __init__(self) -> None:
        self._events: list[AuditEvent] = []
        self._committed = 0
        self.commits: list[tuple[int, int, str | None]] = []

    def append(self, drafts: Sequence[AuditEventDraft]) -> list[AuditEvent]:
        new = chain(list(drafts), self.head())
        self._events.extend(new)
        return new

    def commit(self, message: str | None = None) -> str | None:
        if self._committed == len(self._events):
            return None
        first, last = self._committed + 1, len(self._events)
        self.commits.append((first, last, message))
        self._committed = last
        return f"memory:{len(self.commits)}"

    def flush(self) -> str | None:
        return self.commit()

    @property
    def pending(self) -> int:
        """Acknowledged events not yet committed."""
        return len(self._events) - self._committed

    def head(self) -> ChainHead:
        if not self._events:
            return ChainHead()
        last = self._events[-1]
        return ChainHead(last.seq, last.hash)

    def events(self, after_seq: int = 0) -> Iterator[AuditEvent]:
        yield from self._events[max(after_seq, 0) :]

    def query(self, query: AuditQuery) -> list[AuditEvent]:
        return query.apply(self._events)

    def verify(self) -> VerifyResult:
        return verify_records(
            (f"memory[{e.seq}]", e.model_dump(mode="json", exclude_none=True)) for e in self._events
        )
