"""Leased resource locks across GitHub Actions runners: one git ref per resource.

Why refs: every runner of a workflow talks to the same repository, and GitHub's git refs API
gives us the two atomic primitives a lock needs, with no extra service:

- **create** ``POST /repos/{o}/{r}/git/refs`` of ``refs/plangate/locks/<name>`` fails with 422
  "Reference already exists" if any other run created it first: exactly one creator wins;
- **compare-and-swap** ``PATCH /repos/{o}/{r}/git/refs/{ref}`` with ``force: false`` succeeds
  only if the new commit *descends from* the ref's current commit (else 422 "Update is not a
  fast forward"). Every lease change is a new commit whose parent is the commit it replaces, so
  two runs that both saw the same expired lease build sibling commits and only one PATCH wins.

The lease lives in the commit message (JSON on its last line: holder run id, plan, repository,
workflow run, ``expires_at`` in Unix seconds, ``state`` held|released). The holder renews it (a
child commit with a later expiry) every ``lease/3`` from the runner's heartbeat; a renewal that
loses the CAS means someone took the lock over after our lease expired: the lock is lost and the
runner pauses before its next step. Release is a CAS to a ``released`` child commit — never a
``DELETE``, which is not conditional and could delete a lock that another run took over a moment
earlier. The ref therefore stays, and its history is the resource's lock history.

An expired lease (``now > expires_at + skew``: ``skew`` absorbs clock differences between
runners) or a released one is taken over by CAS. A lease we cannot read (someone wrote the ref by
hand) is treated as held: fail closed; docs/runbooks.md says how to clear it.

All resources of a plan are taken in sorted order; if one is busy the ones already taken are
released again (all or nothing), so two plans never hold half of each other's resources.

Adapter over a narrow ``RefApi`` (``RestTransport.request`` fits): blocking calls, a few per
acquire/renew, none per step. The renewal runs while steps run, so the runner awaits
``renew_async``, which makes those calls on a worker thread (``asyncio.to_thread``): a slow
GitHub (each call may take its full HTTP timeout and retries) never stalls the event loop, i.e.
the other steps' progress and their ``timeout``s. One mutex serialises renew, acquire and
release, so a release waits for a renewal still in flight instead of racing its compare-and-swap.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

from app.errors import GitHubError
from app.execute.locks import LockHolder, poll_until_acquired

__all__ = ["LOCK_REF_PREFIX", "GitRefLocks", "Lease", "lock_ref"]

log = logging.getLogger(__name__)

LOCK_REF_PREFIX = "refs/plangate/locks/"
_LEASE_FILE = "README.md"
_LEASE_FILE_TEXT = (
    "A Plangate resource lock. The lease is in the commit message; see docs/executor.md "
    "('Locks across runners').\n"
)
#: bounded retries of the read -> create/CAS loop when other runs keep racing us
_MAX_ROUNDS = 4


class RefApi(Protocol):
    """``request(verb, path, body=...) -> response with .data``; raises ``GitHubError``."""

    def request(self, verb: str, path: str, *, body: Any = None) -> Any: ...


def lock_ref(resource: str) -> str:
    """``refs/plangate/locks/<slug>.<sha256 prefix>`` for a plan resource.

    Resources are free text (``db/orders-primary``): git forbids some characters and a ref
    cannot be both a file and a directory (``db`` and ``db/orders``), so the name is a readable
    one-component slug plus 16 hex of the resource's sha256 (unique, and never ``.lock``).
    """
    slug = re.sub(r"[^a-z0-9._-]+", "-", resource.lower())
    slug = re.sub(r"\.{2,}", ".", slug).strip(".-")[:80] or "resource"
    return f"{LOCK_REF_PREFIX}{slug}.{hashlib.sha256(resource.encode()).hexdigest()[:16]}"


@dataclass(frozen=True, slots=True)
class Lease:
    resource: str
    holder: str
    plan_id: str
    expires_at: float
    state: str = "held"  # held | released
    repository: str = ""
    run_url: str = ""

    def message(self) -> str:
        body = {
            "v": 1,
            "resource": self.resource,
            "holder": self.holder,
            "plan": self.plan_id,
            "expires_at": round(self.expires_at, 3),
            "state": self.state,
            "repository": self.repository,
            "run_url": self.run_url,
        }
        verb = "released by" if self.state == "released" else "held by"
        title = f"plangate lock {self.resource!r} {verb} run {self.holder} (plan {self.plan_id})"
        return f"{title}\n\n{json.dumps(body, sort_keys=True)}\n"

    @classmethod
    def parse(cls, message: str) -> Lease | None:
        lines = [line for line in message.strip().splitlines() if line.strip()]
        if not lines:
            return None
        try:
            data = json.loads(lines[-1])
            return cls(
                resource=str(data["resource"]),
                holder=str(data["holder"]),
                plan_id=str(data["plan"]),
                expires_at=float(data["expires_at"]),
                state=str(data.get("state", "held")),
                repository=str(data.get("repository", "")),
                run_url=str(data.get("run_url", "")),
            )
        except (ValueError, KeyError, TypeError):
            return None


@dataclass
class _Held:
    ref: str
    commit: str
    expires_at: float
    plan_id: str = ""


class GitRefLocks:
    """The runner's lock port (``acquire``/``renew``/``release``/``lease``) over git refs.

    ``repo`` is ``owner/name``; ``now`` is Unix time (the lease is compared across runners, so
    it must be the wall clock); ``sleep`` waits between polls when ``wait=True``.
    """

    def __init__(
        self,
        api: RefApi,
        repo: str,
        *,
        now: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        lease: float = 300.0,
        skew: float = 30.0,
        run_url: str = "",
    ) -> None:
        if lease <= 0 or skew < 0:
            raise ValueError("lease must be positive and skew not negative")
        owner, _, name = repo.partition("/")
        self._base = f"/repos/{quote(owner)}/{quote(name)}"
        self.api = api
        self.repo = repo
        self.now = now
        self.sleep = sleep
        self.lease = lease
        self.skew = skew
        self.run_url = run_url
        self._tree: str | None = None
        self._held: dict[str, dict[str, _Held]] = {}
        #: one lease change at a time per process (the renewal runs on a worker thread)
        self._mutex = threading.RLock()
        #: (resource, previous holder) of every expired lease this process took over
        self.takeovers: list[tuple[str, str]] = []

    # -- the port ----------------------------------------------------------------------------

    def try_acquire(self, resources: Sequence[str], holder: str, plan_id: str) -> list[LockHolder]:
        """Take every resource or none. Returns the conflicting holders (empty: acquired)."""
        with self._mutex:
            return self._try_acquire(resources, holder, plan_id)

    def _try_acquire(self, resources: Sequence[str], holder: str, plan_id: str) -> list[LockHolder]:
        before = self._held.get(holder, {})
        taken: dict[str, _Held] = dict(before)
        for resource in sorted(set(resources)):
            if resource in taken:
                continue
            try:
                got = self._take(resource, holder, plan_id)
            except BaseException:  # GitHub failed midway: give back what this call took
                self._release_all({r: h for r, h in taken.items() if r not in before}, holder)
                raise
            if isinstance(got, LockHolder):
                self._release_all({r: h for r, h in taken.items() if r not in before}, holder)
                return [got]
            taken[resource] = got
        if taken:
            self._held[holder] = taken
        return []

    async def acquire(
        self,
        resources: Sequence[str],
        holder: str,
        plan_id: str,
        *,
        wait: bool,
        wait_timeout: float = 600.0,
        poll: float = 1.0,
        on_wait: Callable[[list[LockHolder]], None] | None = None,
    ) -> None:
        """Acquire all ``resources``; wait (polling) up to ``wait_timeout`` or fail fast."""
        await poll_until_acquired(
            lambda: self.try_acquire(resources, holder, plan_id),
            wait=wait,
            wait_timeout=wait_timeout,
            # API calls, not SQLite: do not hammer GitHub while waiting
            poll=max(poll, 5.0),
            on_wait=on_wait,
            now=self.now,
            sleep=self.sleep,
        )

    async def renew_async(self, holder: str) -> int:
        """``renew`` on a worker thread: what the runner's heartbeat awaits.

        If the awaiting task is cancelled (the run ended) the thread still finishes its
        compare-and-swap; ``release`` then waits for it on the mutex.
        """
        return await asyncio.to_thread(self.renew, holder)

    def renew(self, holder: str) -> int:
        """Push every lease of ``holder`` forward; returns how many locks it still holds.

        A lost CAS (422) means the lock was taken over: it is dropped. A transient error keeps
        the lock while our own lease has not run out (the next heartbeat tries again).
        Blocking (API calls): from a coroutine, await ``renew_async``.
        """
        with self._mutex:
            return self._renew(holder)

    def _renew(self, holder: str) -> int:
        held = self._held.get(holder, {})
        for resource, h in list(held.items()):
            now = self.now()
            lease = Lease(resource, holder, h.plan_id, now + self.lease, **self._where())
            try:
                commit = self._commit(lease, parent=h.commit)
                self._cas(h.ref, commit)
            except _Lost:
                log.warning("lock %s (%s) was taken over: lease lost", resource, h.ref)
                del held[resource]
                continue
            except GitHubError as exc:
                if now >= h.expires_at:
                    log.warning("lock %s: cannot renew and the lease ran out: %s", resource, exc)
                    del held[resource]
                continue
            held[resource] = _Held(h.ref, commit, lease.expires_at, h.plan_id)
        return len(held)

    def release(self, holder: str) -> None:
        """Release everything ``holder`` holds (a ``released`` commit, by CAS). Never raises:
        a release that fails leaves a lease that expires on its own."""
        with self._mutex:
            self._release_all(self._held.pop(holder, {}), holder)

    def holders(self) -> list[LockHolder]:
        """The locks this process holds (other runs' locks are seen on contention)."""
        with self._mutex:
            return [
                LockHolder(resource, holder, h.plan_id, h.expires_at)
                for holder, held in self._held.items()
                for resource, h in sorted(held.items())
            ]

    # -- internals ---------------------------------------------------------------------------

    def _where(self) -> Mapping[str, str]:
        return {"repository": self.repo, "run_url": self.run_url}

    def _take(self, resource: str, holder: str, plan_id: str) -> _Held | LockHolder:
        ref = lock_ref(resource)
        for _ in range(_MAX_ROUNDS):
            current = self._read(ref)
            lease = Lease(resource, holder, plan_id, self.now() + self.lease, **self._where())
            if current is None:
                commit = self._commit(lease, parent=None)
                try:
                    self._create(ref, commit)
                except _Lost:  # another run created it between our read and our create
                    continue
                return _Held(ref, commit, lease.expires_at, plan_id)
            sha, seen = current
            if seen is None:  # unreadable lease: held, fail closed
                return LockHolder(resource, "(unknown: unreadable lease)", "?", float("inf"))
            free = seen.state == "released" or self.now() > seen.expires_at + self.skew
            if not free and seen.holder != holder:
                return LockHolder(resource, seen.holder, seen.plan_id, seen.expires_at)
            commit = self._commit(lease, parent=sha)
            try:
                self._cas(ref, commit)
            except _Lost:  # someone else moved it first: look again
                continue
            if seen.state != "released" and seen.holder != holder:
                self.takeovers.append((resource, seen.holder))
                log.warning("lock %s: took over the expired lease of run %s", resource, seen.holder)
            return _Held(ref, commit, lease.expires_at, plan_id)
        current = self._read(ref)
        seen = current[1] if current else None
        if seen is None:
            return LockHolder(resource, "(contended)", "?", self.now() + self.lease)
        return LockHolder(resource, seen.holder, seen.plan_id, seen.expires_at)

    def _release_all(self, held: Mapping[str, _Held], holder: str) -> None:
        for resource, h in held.items():
            lease = Lease(resource, holder, h.plan_id, self.now(), "released", **self._where())
            try:
                self._cas(h.ref, self._commit(lease, parent=h.commit))
            except _Lost:  # already taken over after our lease ran out: nothing to release
                log.warning("lock %s was taken over before release", resource)
            except GitHubError as exc:
                log.warning(
                    "lock %s: release failed (%s); its lease expires on its own", h.ref, exc
                )

    def _read(self, ref: str) -> tuple[str, Lease | None] | None:
        """``(commit sha, lease)`` of the ref, or None when it does not exist."""
        try:
            data = self.api.request("GET", f"{self._base}/git/ref/{ref.removeprefix('refs/')}").data
        except GitHubError as exc:
            if exc.status == 404:
                return None
            raise
        sha = str(data["object"]["sha"])
        commit = self.api.request("GET", f"{self._base}/git/commits/{sha}").data
        return sha, Lease.parse(str(commit.get("message", "")))

    def _commit(self, lease: Lease, *, parent: str | None) -> str:
        if self._tree is None:
            body = {
                "tree": [
                    {
                        "path": _LEASE_FILE,
                        "mode": "100644",
                        "type": "blob",
                        "content": _LEASE_FILE_TEXT,
                    }
                ]
            }
            self._tree = str(
                self.api.request("POST", f"{self._base}/git/trees", body=body).data["sha"]
            )
        body = {
            "message": lease.message(),
            "tree": self._tree,
            "parents": [parent] if parent else [],
        }
        return str(self.api.request("POST", f"{self._base}/git/commits", body=body).data["sha"])

    def _create(self, ref: str, commit: str) -> None:
        try:
            self.api.request("POST", f"{self._base}/git/refs", body={"ref": ref, "sha": commit})
        except GitHubError as exc:
            if exc.status == 422:  # "Reference already exists": held (or being created) by another
                raise _Lost(str(exc)) from exc
            raise

    def _cas(self, ref: str, commit: str) -> None:
        try:
            self.api.request(
                "PATCH",
                f"{self._base}/git/refs/{ref.removeprefix('refs/')}",
                body={"sha": commit, "force": False},
            )
        except GitHubError as exc:
            if exc.status == 422:  # "Update is not a fast forward": it moved under us
                raise _Lost(str(exc)) from exc
            raise


class _Lost(Exception):
    """Internal: the create or compare-and-swap lost a race."""
