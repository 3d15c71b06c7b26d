"""The one narrow door to GitHub's REST API, built on PyGithub's ``Requester``.

Why raw requests through PyGithub instead of its object model: every call here is one REST
request we chose (PyGithub's lazy objects make extra ``GET``s), so calls per event stay small
and countable. PyGithub still does the auth headers, base-URL handling (``GITHUB_API_URL``, GHES
``/api/v3``), connection pooling and JSON.

Errors follow HTTP, never string parsing:

- 403/429 with ``Retry-After``, ``x-ratelimit-remaining: 0`` or a secondary-limit message ->
  ``RateLimited(retry_after)`` (see https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api)
- 5xx and network failures -> ``GitHubUnavailable``
- other 4xx -> ``GitHubError(status)``

``RestTransport`` retries the first two (tenacity; exponential backoff with jitter; a rate-limit
wait longer than ``max_inline_wait`` is raised to the worker, which reschedules the delivery
durably instead of holding a thread). Nothing from PyGithub or ``requests`` leaves this module:
callers get the dataclasses below.
"""

from __future__ import annotations

import base64
import random
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

import requests
from github.Requester import Requester
from pydantic import BaseModel, ConfigDict, Field
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from app.errors import GitHubError, GitHubUnavailable, RateLimited
from app.observability import metrics

__all__ = [
    "ChangedFile",
    "ExistingCheckRun",
    "GitHubCache",
    "HttpRetry",
    "PullRequestContext",
    "PullRequestInfo",
    "RepoClient",
    "Response",
    "RestTransport",
    "Review",
    "build_retrying",
    "map_error",
]

#: GitHub asks to wait at least a minute after a secondary limit that names no time
SECONDARY_LIMIT_DEFAULT_WAIT = 60.0


class HttpRetry(BaseModel):
    """How one REST call is retried inside the adapter (the worker retries whole deliveries)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_attempts: int = Field(4, ge=1, description="attempts per call, the first one included")
    initial_delay: float = Field(0.5, ge=0, description="seconds before the first retry")
    max_delay: float = Field(8.0, ge=0, description="cap for the exponential backoff")
    max_inline_wait: float = Field(
        30.0, ge=0, description="rate-limit waits longer than this are left to the worker"
    )


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: Mapping[str, str]
    data: Any


def map_error(
    status: int, headers: Mapping[str, str], data: Any, *, now: float
) -> GitHubError | None:
    """The Plangate error for an HTTP answer, or None if it is a success (2xx/304)."""
    if status < 400:
        return None
    h = {k.lower(): v for k, v in headers.items()}
    message = data.get("message", "") if isinstance(data, Mapping) else str(data or "")
    if status in (403, 429):
        retry_after = h.get("retry-after")
        remaining = h.get("x-ratelimit-remaining")
        if retry_after is not None:
            wait = _float(retry_after, SECONDARY_LIMIT_DEFAULT_WAIT)
            return RateLimited(
                f"GitHub rate limit ({status}): {message}", retry_after=wait, status=status
            )
        if remaining == "0":
            reset = _float(h.get("x-ratelimit-reset", ""), now + SECONDARY_LIMIT_DEFAULT_WAIT)
            return RateLimited(
                f"GitHub primary rate limit exhausted ({status}): {message}",
                retry_after=max(1.0, reset - now),
                status=status,
            )
        if status == 429 or "rate limit" in message.lower():
            return RateLimited(
                f"GitHub secondary rate limit ({status}): {message}",
                retry_after=SECONDARY_LIMIT_DEFAULT_WAIT,
                status=status,
            )
    if status >= 500:
        return GitHubUnavailable(f"GitHub answered {status}: {message}", status=status)
    return GitHubError(f"GitHub answered {status}: {message}", status=status)


def build_retrying(
    policy: HttpRetry, *, sleep: Callable[[float], None], rng: random.Random
) -> Retrying:
    """Retry ``GitHubUnavailable`` and short ``RateLimited`` waits, at most ``max_attempts``.

    Waits: the rate limit's own ``retry_after``; otherwise exponential backoff with jitter
    (uniform in [cap/2, cap]).
    """

    def retryable(exc: BaseException) -> bool:
        if isinstance(exc, RateLimited):
            return exc.retry_after <= policy.max_inline_wait
        return isinstance(exc, GitHubUnavailable)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RateLimited):
            return exc.retry_after
        cap = min(policy.max_delay, policy.initial_delay * 2 ** (state.attempt_number - 1))
        return rng.uniform(cap / 2, cap)

    return Retrying(
        stop=stop_after_attempt(policy.max_attempts),
        wait=wait,
        retry=retry_if_exception(retryable),
        sleep=sleep,
        reraise=True,
    )


def _float(text: str, default: float) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return default


class RestTransport:
    """One REST call at a time through a PyGithub ``Requester``, with retries and accounting.

    ``requester`` is a factory so installation tokens can rotate underneath. ``sleep``, ``clock``
    and ``rng`` are injected so tests take no time. ``calls`` counts HTTP requests sent (the
    number the issue's calls-per-event targets are about).
    """

    def __init__(
        self,
        requester: Callable[[], Requester],
        *,
        retry: HttpRetry | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        on_call: Callable[[str, str, int], None] | None = None,
    ) -> None:
        self._requester = requester
        self.retry = retry or HttpRetry()
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()
        self._on_call = on_call
        self._lock = threading.Lock()
        self._blocked_until = 0.0
        self.calls = 0

    def request(
        self,
        verb: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        recover: Callable[[], Response | None] | None = None,
    ) -> Response:
        """Send one request (retrying transient failures); raise a ``GitHubError`` on failure.

        ``recover`` is for requests that are not idempotent (creating a check run): a 5xx or a
        dropped connection may come *after* GitHub applied the request, so before each retry
        ``recover()`` looks for its effect and, if it finds one, that is the answer.
        """
        retrying = build_retrying(self.retry, sleep=self._sleep, rng=self._rng)
        failed = False

        def attempt() -> Response:
            nonlocal failed
            if failed and recover is not None:
                found = recover()
                if found is not None:
                    return found
            try:
                return self._once(verb, path, params, body, headers)
            except GitHubUnavailable:
                failed = True
                raise

        return retrying(attempt)

    def _once(
        self,
        verb: str,
        path: str,
        params: Mapping[str, Any] | None,
        body: Any,
        headers: Mapping[str, str] | None,
    ) -> Response:
        now = self._clock()
        if now < self._blocked_until:
            # the last answer said the primary quota is used up: do not spend a request on a 403
            raise RateLimited(
                "GitHub primary rate limit exhausted (remembered from the last response)",
                retry_after=self._blocked_until - now,
            )
        with self._lock:
            self.calls += 1
        try:
            status, resp_headers, text = self._requester().requestJson(
                verb,
                path,
                parameters=dict(params) if params else None,
                headers=dict(headers) if headers else None,
                input=body,
            )
        except requests.RequestException as exc:
            metrics.GITHUB_API_CALLS.labels(method=verb, status="error").inc()
            raise GitHubUnavailable(f"cannot reach GitHub: {exc}") from exc
        if self._on_call:
            self._on_call(verb, path, status)
        metrics.GITHUB_API_CALLS.labels(method=verb, status=f"{status // 100}xx").inc()
        data = _json(text)
        h = {k.lower(): v for k, v in resp_headers.items()}
        remaining = h.get("x-ratelimit-remaining")
        if remaining is not None and remaining.isdigit():
            metrics.GITHUB_RATE_LIMIT_REMAINING.labels(
                resource=h.get("x-ratelimit-resource", "core")
            ).set(int(remaining))
        if h.get("x-ratelimit-remaining") == "0" and status < 400:
            self._blocked_until = _float(h.get("x-ratelimit-reset", ""), 0.0)
        error = map_error(status, h, data, now=self._clock())
        if error is not None:
            raise error
        return Response(status, h, data)

    def graphql(self, query: str, variables: Mapping[str, Any]) -> Any:
        """One GraphQL query (``POST /graphql``; GHES: ``/api/graphql``, derived from
        ``GITHUB_API_URL`` by PyGithub); its ``data``. GraphQL errors raise ``GitHubError``."""
        resp = self.request(
            "POST",
            self._requester().graphql_url,
            body={"query": query, "variables": dict(variables)},
        )
        data = resp.data if isinstance(resp.data, Mapping) else {}
        if data.get("errors") or not isinstance(data.get("data"), Mapping):
            errors = data.get("errors") or [{"message": "no data"}]
            message = "; ".join(str(e.get("message", e)) for e in errors if isinstance(e, Mapping))
            raise GitHubError(f"GitHub GraphQL query failed: {message or errors}", status=None)
        return data["data"]

    def paginate(self, path: str, *, params: Mapping[str, Any] | None = None) -> list[Any]:
        """Every item of a list endpoint, following ``Link: rel="next"`` (100 per page)."""
        items: list[Any] = []
        next_path: str | None = path
        query: Mapping[str, Any] | None = {"per_page": 100, **(params or {})}
        while next_path:
            resp = self.request("GET", next_path, params=query)
            items.extend(resp.data or [])
            next_path = _next_link(resp.headers.get("link", ""))
            query = None  # the next link carries the query
        return items


def _json(text: str) -> Any:
    import json

    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _next_link(link: str) -> str | None:
    for part in link.split(","):
        if 'rel="next"' in part:
            return part[part.find("<") + 1 : part.find(">")]
    return None


# -- values the rest of Plangate sees ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChangedFile:
    path: str
    status: str  # added | removed | modified | renamed | copied | changed | unchanged
    blob_sha: str | None
    previous_path: str | None = None


@dataclass(frozen=True, slots=True)
class ExistingCheckRun:
    """A check run already on a commit, as ``checks/list-for-ref`` lists it."""

    id: int
    name: str
    external_id: str | None
    app_id: int | None


@dataclass(frozen=True, slots=True)
class Review:
    id: int
    user: str
    state: str  # APPROVED | CHANGES_REQUESTED | COMMENTED | DISMISSED | PENDING
    commit_id: str | None
    submitted_at: str | None


@dataclass(frozen=True, slots=True)
class PullRequestInfo:
    number: int
    author: str
    head_sha: str
    base_sha: str
    base_ref: str
    draft: bool = False
    state: str = "open"


class PullRequestContext(Protocol):
    """What evaluation may ask about a pull request, as plain values.

    Implementations cache per evaluation; every method may raise ``GitHubError`` (retried by the
    worker) and none of them mutates anything.
    """

    def changed_files(self, number: int) -> list[ChangedFile]: ...
    def blob(self, sha: str) -> bytes: ...
    def file_at(self, path: str, ref: str) -> bytes | None: ...
    def reviews(self, number: int) -> list[Review]: ...
    def commits(self, number: int) -> list[str]: ...
    def is_team_member(self, org: str, team_slug: str, login: str) -> bool: ...
    def permission(self, login: str) -> str: ...


@dataclass
class GitHubCache:
    """Process-wide caches of immutable things: blobs by SHA, directory listings by tree SHA,
    and which ``policies/`` tree a base commit has. Plus ETags for conditional list requests.
    """

    max_blobs: int = 2048
    blobs: OrderedDict[str, bytes] = field(default_factory=OrderedDict)
    trees: dict[str, dict[str, str]] = field(default_factory=dict)
    commit_subtree: dict[tuple[str, str, str], str | None] = field(default_factory=dict)
    etags: dict[str, tuple[str, Any]] = field(default_factory=dict)
    files_at: dict[tuple[str, str, str], bytes | None] = field(default_factory=dict)
    pr_files: dict[tuple[str, int, str, str], tuple[ChangedFile, ...]] = field(default_factory=dict)
    pr_commits: dict[tuple[str, int, str, str], tuple[Any, ...]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def get_blob(self, sha: str) -> bytes | None:
        with self.lock:
            data = self.blobs.get(sha)
            if data is not None:
                self.blobs.move_to_end(sha)
            return data

    def put_blob(self, sha: str, data: bytes) -> None:
        with self.lock:
            self.blobs[sha] = data
            while len(self.blobs) > self.max_blobs:
                self.blobs.popitem(last=False)


class RepoClient:
    """``PullRequestContext`` plus the few writes Plangate makes, for one repository."""

    def __init__(self, transport: RestTransport, full_name: str, *, cache: GitHubCache) -> None:
        owner, _, name = full_name.partition("/")
        if not owner or not name:
            raise ValueError(f"repository must be OWNER/NAME, got {full_name!r}")
        self.transport = transport
        self.full_name = full_name
        self._base = f"/repos/{quote(owner)}/{quote(name)}"
        self._cache = cache

    @property
    def cache(self) -> GitHubCache:
        return self._cache

    # reads ------------------------------------------------------------------------------------

    def pull(self, number: int) -> PullRequestInfo:
        data = self.transport.request("GET", f"{self._base}/pulls/{number}").data
        return pull_info(data)

    def open_pulls(self, base: str) -> list[PullRequestInfo]:
        items = self.transport.paginate(
            f"{self._base}/pulls", params={"state": "open", "base": base}
        )
        return [pull_info(d) for d in items]

    def changed_files(
        self, number: int, *, head_sha: str | None = None, base_sha: str | None = None
    ) -> list[ChangedFile]:
        """Files the pull request changes. With ``head_sha`` and ``base_sha`` the answer is
        cached: the diff between two commits never changes (GitHub diffs against the merge
        base, which two fixed commits determine)."""
        key = (self.full_name, number, head_sha or "", base_sha or "")
        if head_sha and base_sha and key in self._cache.pr_files:
            return list(self._cache.pr_files[key])
        files = self._changed_files(number)
        if head_sha and base_sha:
            self._cache.pr_files[key] = tuple(files)
        return files

    def _changed_files(self, number: int) -> list[ChangedFile]:
        items = self._conditional_list(f"{self._base}/pulls/{number}/files")
        return [
            ChangedFile(
                path=d["filename"],
                status=d.get("status", "modified"),
                blob_sha=d.get("sha"),
                previous_path=d.get("previous_filename"),
            )
            for d in items
        ]

    def reviews(self, number: int) -> list[Review]:
        items = self._conditional_list(f"{self._base}/pulls/{number}/reviews")
        return [
            Review(
                id=int(d["id"]),
                user=(d.get("user") or {}).get("login", ""),
                state=d.get("state", ""),
                commit_id=d.get("commit_id"),
                submitted_at=d.get("submitted_at"),
            )
            for d in items
        ]

    def commits(self, number: int) -> list[str]:
        return [d["sha"] for d in self.transport.paginate(f"{self._base}/pulls/{number}/commits")]

    def blob(self, sha: str) -> bytes:
        cached = self._cache.get_blob(sha)
        if cached is not None:
            return cached
        data = self.transport.request("GET", f"{self._base}/git/blobs/{sha}").data
        raw = _decode_content(data)
        self._cache.put_blob(sha, raw)
        return raw

    def file_at(self, path: str, ref: str) -> bytes | None:
        """A file's bytes at ``ref`` (None if it does not exist there); cached for commit SHAs."""
        key = (self.full_name, path, ref)
        if key in self._cache.files_at:
            return self._cache.files_at[key]
        raw = self._file_at(path, ref)
        if len(ref) == 40:  # a commit SHA: immutable, safe to cache (branch names are not)
            self._cache.files_at[key] = raw
        return raw

    def _file_at(self, path: str, ref: str) -> bytes | None:
        try:
            data = self.transport.request(
                "GET", f"{self._base}/contents/{quote(path)}", params={"ref": ref}
            ).data
        except GitHubError as exc:
            if exc.status == 404:
                return None
            raise
        if not isinstance(data, Mapping) or data.get("type") != "file":
            return None
        sha = data.get("sha")
        raw = _decode_content(data)
        if isinstance(sha, str):
            self._cache.put_blob(sha, raw)
        return raw

    def directory_at(self, commit_sha: str, directory: str) -> tuple[str | None, dict[str, str]]:
        """``(tree SHA, {path: blob SHA})`` of ``directory`` at a commit, recursively.

        Cached by commit and by tree SHA (both immutable), so a base that was seen before costs
        no request at all, and a new base whose ``policies/`` did not change costs one.
        """
        key = (self.full_name, commit_sha, directory)
        if key in self._cache.commit_subtree:
            tree_sha = self._cache.commit_subtree[key]
            return tree_sha, dict(self._cache.trees.get(tree_sha or "", {}))
        root = self.transport.request("GET", f"{self._base}/git/trees/{commit_sha}").data
        tree_sha = next(
            (
                e["sha"]
                for e in (root or {}).get("tree", [])
                if e.get("path") == directory and e.get("type") == "tree"
            ),
            None,
        )
        if tree_sha and tree_sha not in self._cache.trees:
            sub = self.transport.request(
                "GET", f"{self._base}/git/trees/{tree_sha}", params={"recursive": "1"}
            ).data
            self._cache.trees[tree_sha] = {
                f"{directory}/{e['path']}": e["sha"]
                for e in (sub or {}).get("tree", [])
                if e.get("type") == "blob"
            }
        self._cache.commit_subtree[key] = tree_sha
        return tree_sha, dict(self._cache.trees.get(tree_sha or "", {}))

    def files_under(self, commit_sha: str, directory: str) -> tuple[str | None, dict[str, bytes]]:
        """``(tree SHA, {path: bytes})`` of every file under ``directory`` at a commit.

        Costs one request however many files there are: a GraphQL query for the directory's
        tree with its blobs' text, two levels deep. Each text is checked against its blob SHA
        (``git hash-object``), so what is returned is exactly the commit's content; anything the
        query cannot give exactly (a deeper folder, a binary or truncated blob, GraphQL
        unavailable) is read through the REST tree and blob endpoints instead. Cached by commit
        and by tree SHA, blobs by blob SHA: a base seen before costs no request.
        """
        key = (self.full_name, commit_sha, directory)
        if key not in self._cache.commit_subtree:
            self._read_by_graphql(commit_sha, directory)
        tree_sha, listing = self.directory_at(commit_sha, directory)
        return tree_sha, {p: self.blob(sha) for p, sha in sorted(listing.items())}

    def _read_by_graphql(self, commit_sha: str, directory: str) -> None:
        """Fill the caches ``directory_at`` and ``blob`` read from, in one query if possible."""
        key = (self.full_name, commit_sha, directory)
        try:
            found = self._files_by_graphql(commit_sha, directory)
        except GitHubError as exc:
            if isinstance(exc, (RateLimited, GitHubUnavailable)):
                raise
            found = None  # GraphQL refused (e.g. disabled on a GHES): the REST way below
        if found is not None:
            tree_sha, listing = found
            self._cache.trees.setdefault(tree_sha, listing)
            self._cache.commit_subtree[key] = tree_sha

    def _files_by_graphql(
        self, commit_sha: str, directory: str
    ) -> tuple[str, dict[str, str]] | None:
        """Read ``directory`` at ``commit_sha`` in one query; verified texts go to the blob cache.

        ``(tree SHA, {path: blob SHA})``, or None when the folder does not exist. A listing is
        only returned if it is complete (no folder deeper than the query reaches); blobs the
        query could not give exactly are simply not cached (the caller reads them by REST).
        """
        owner, _, name = self.full_name.partition("/")
        data = self.transport.graphql(
            FILES_QUERY, {"owner": owner, "name": name, "expression": f"{commit_sha}:{directory}"}
        )
        obj = ((data.get("repository") or {}).get("object")) if isinstance(data, Mapping) else None
        if not isinstance(obj, Mapping) or obj.get("__typename") != "Tree":
            self._cache.commit_subtree[(self.full_name, commit_sha, directory)] = None
            return None
        listing: dict[str, str] = {}
        complete = True
        for entry in obj.get("entries") or []:
            path = f"{directory}/{entry['name']}"
            if entry.get("type") == "tree":
                for sub in (entry.get("object") or {}).get("entries") or []:
                    if sub.get("type") == "tree":
                        complete = False  # deeper than the query reaches
                    elif sub.get("type") == "blob":
                        listing[f"{path}/{sub['name']}"] = sub["oid"]
                        self._cache_text(sub)
            elif entry.get("type") == "blob":
                listing[path] = entry["oid"]
                self._cache_text(entry)
        if not complete:
            return None
        return str(obj["oid"]), listing

    def _cache_text(self, entry: Mapping[str, Any]) -> None:
        blob = entry.get("object") or {}
        text = blob.get("text")
        if not isinstance(text, str) or blob.get("isBinary") or blob.get("isTruncated"):
            return
        raw = text.encode("utf-8")
        if _git_blob_sha(raw) == entry.get("oid"):  # exactly the committed bytes, or not at all
            self._cache.put_blob(str(entry["oid"]), raw)

    def is_team_member(self, org: str, team_slug: str, login: str) -> bool:
        try:
            data = self.transport.request(
                "GET", f"/orgs/{quote(org)}/teams/{quote(team_slug)}/memberships/{quote(login)}"
            ).data
        except GitHubError as exc:
            if exc.status == 404:
                return False
            raise
        return isinstance(data, Mapping) and data.get("state") == "active"

    def permission(self, login: str) -> str:
        try:
            data = self.transport.request(
                "GET", f"{self._base}/collaborators/{quote(login)}/permission"
            ).data
        except GitHubError as exc:
            if exc.status == 404:
                return "none"
            raise
        return str((data or {}).get("permission", "none"))

    # writes -----------------------------------------------------------------------------------

    def create_check_run(self, body: Mapping[str, Any], *, app_id: int | None = None) -> int:
        """Create a check run; its id.

        With an ``external_id`` in ``body``, a retry after a 5xx or a lost connection first
        looks for a run of that ``external_id`` (of App ``app_id``) on the head SHA, so a create
        GitHub applied but could not confirm is not made twice.
        """
        external_id = body.get("external_id")

        def recover() -> Response | None:
            found = self.find_check_run(str(body["head_sha"]), str(external_id), app_id=app_id)
            return None if found is None else Response(200, {}, {"id": found})

        data = self.transport.request(
            "POST",
            f"{self._base}/check-runs",
            body=dict(body),
            recover=recover if external_id and body.get("head_sha") else None,
        ).data
        return int(data["id"])

    def find_check_run(
        self, ref: str, external_id: str, *, app_id: int | None = None
    ) -> int | None:
        """The id of the run on ``ref`` with this ``external_id`` (of App ``app_id``), if any."""
        for run in self.check_runs_for_ref(ref, app_id=app_id):
            if run.external_id == external_id and (app_id is None or run.app_id == app_id):
                return run.id
        return None

    def update_check_run(self, check_run_id: int, body: Mapping[str, Any]) -> None:
        self.transport.request("PATCH", f"{self._base}/check-runs/{check_run_id}", body=dict(body))

    def check_run_annotations(self, check_run_id: int) -> list[dict[str, Any]]:
        """Every annotation on a check run (``checks/list-annotations``, 100 per request)."""
        return [
            a
            for a in self.transport.paginate(f"{self._base}/check-runs/{check_run_id}/annotations")
            if isinstance(a, Mapping)
        ]

    def update_check_run_batches(
        self,
        check_run_id: int,
        bodies: Sequence[Mapping[str, Any]],
        *,
        present: Sequence[Mapping[str, Any]] | None,
    ) -> None:
        """Send ``bodies`` (updates of one run, in order) so that each annotation lands once.

        GitHub *appends* the annotations of every update, so an update that GitHub applied but
        could not confirm (a 5xx, a reset connection) must not be sent again. ``present`` is
        what the run is known to hold already (the annotations its create carried), or None
        when that is unknown (a run left by an earlier attempt): then the run's annotations
        are read first and the bodies whose annotations are all there (sent by that attempt)
        lose them (a body left with nothing but its title and summary is not sent). After an
        ambiguous failure the annotations are read again before each retry: if this body's
        are there beyond what the run held before it, it was applied. Bodies without
        annotations, and runs whose updates all succeed, cost no extra request.
        """
        spare: Counter[tuple[Any, ...]] = Counter()  # held by the run, sent by no body yet
        if present is None and any(_annotations_of(b) for b in bodies):
            spare.update(_annotation_key(a) for a in self.check_run_annotations(check_run_id))
        known = spare + Counter(_annotation_key(a) for a in present or ())  # what the run holds
        for body in bodies:
            batch = Counter(_annotation_key(a) for a in _annotations_of(body))
            if batch and not batch - spare:  # all there already: an earlier attempt sent it
                spare -= batch
                body = _without_annotations(body)
                if body is None:
                    continue
                batch = Counter()

            def recover(
                batch: Counter[tuple[Any, ...]] = batch, known: Counter[tuple[Any, ...]] = known
            ) -> Response | None:
                there = Counter(
                    _annotation_key(a) for a in self.check_run_annotations(check_run_id)
                )
                applied = not batch - (there - known)
                return Response(200, {}, {"id": check_run_id}) if applied else None

            self.transport.request(
                "PATCH",
                f"{self._base}/check-runs/{check_run_id}",
                body=dict(body),
                recover=recover if batch else None,
            )
            known = known + batch

    def check_runs_for_ref(self, ref: str, *, app_id: int | None = None) -> list[ExistingCheckRun]:
        """Every check run on ``ref`` (all of them, not only the latest per name), optionally
        only those of one App. One request per 100 runs.

        Used to find a run this server created but could not remember (killed between GitHub's
        answer and the inbox write): its ``external_id`` names it.
        """
        params: dict[str, Any] = {"filter": "all", "per_page": 100}
        if app_id is not None:
            params["app_id"] = app_id
        runs: list[ExistingCheckRun] = []
        path: str | None = f"{self._base}/commits/{quote(ref)}/check-runs"
        query: Mapping[str, Any] | None = params
        while path:
            resp = self.transport.request("GET", path, params=query)
            for d in (
                (resp.data or {}).get("check_runs", []) if isinstance(resp.data, Mapping) else []
            ):
                app = d.get("app") or {}
                runs.append(
                    ExistingCheckRun(
                        id=int(d["id"]),
                        name=str(d.get("name", "")),
                        external_id=d.get("external_id") or None,
                        app_id=app.get("id") if isinstance(app, Mapping) else None,
                    )
                )
            path, query = _next_link(resp.headers.get("link", "")), None
        return runs

    def default_branch(self) -> str:
        return str(self.transport.request("GET", self._base).data["default_branch"])

    def ref_sha(self, branch: str) -> str:
        data = self.transport.request("GET", f"{self._base}/git/ref/heads/{quote(branch)}").data
        return str(data["object"]["sha"])

    def create_branch(self, branch: str, sha: str) -> None:
        self.transport.request(
            "POST", f"{self._base}/git/refs", body={"ref": f"refs/heads/{branch}", "sha": sha}
        )

    def put_file(self, path: str, content: bytes, *, branch: str, message: str) -> str:
        data = self.transport.request(
            "PUT",
            f"{self._base}/contents/{quote(path)}",
            body={
                "message": message,
                "content": base64.b64encode(content).decode("ascii"),
                "branch": branch,
            },
        ).data
        return str(data["commit"]["sha"])

    def create_pull(self, *, title: str, head: str, base: str, body: str) -> tuple[int, str]:
        data = self.transport.request(
            "POST",
            f"{self._base}/pulls",
            body={"title": title, "head": head, "base": base, "body": body},
        ).data
        return int(data["number"]), str(data.get("html_url", ""))

    # helpers ----------------------------------------------------------------------------------

    def _conditional_list(self, path: str) -> list[Any]:
        """A one-page list with ``If-None-Match``: a 304 costs no rate-limit quota.

        Lists longer than one page are fetched in full without ETags.
        """
        cached = self._cache.etags.get(path)
        headers = {"If-None-Match": cached[0]} if cached else None
        resp = self.transport.request("GET", path, params={"per_page": 100}, headers=headers)
        if resp.status == 304 and cached:
            return list(cached[1])
        items = list(resp.data or [])
        if _next_link(resp.headers.get("link", "")):
            return self.transport.paginate(path)
        etag = resp.headers.get("etag")
        if etag:
            self._cache.etags[path] = (etag, items)
        return items


#: a directory's tree and its blobs' text, two levels deep (``files_under``)
FILES_QUERY = """
query($owner: String!, $name: String!, $expression: String!) {
  repository(owner: $owner, name: $name) {
    object(expression: $expression) {
      __typename
      ... on Tree {
        oid
        entries {
          name
          type
          oid
          object {
            ... on Blob { text isBinary isTruncated }
            ... on Tree {
              entries {
                name
                type
                oid
                object { ... on Blob { text isBinary isTruncated } }
              }
            }
          }
        }
      }
    }
  }
}
"""


def _git_blob_sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def _sha(value: Any, where: str) -> str:
    if not isinstance(value, str) or len(value) != 40 or not _is_hex(value):
        raise ValueError(f"{where} is not a 40-character commit SHA: {str(value)[:60]!r}")
    return value


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text.lower())


def pull_info(data: Mapping[str, Any]) -> PullRequestInfo:
    """A REST or webhook ``pull_request`` object as ``PullRequestInfo``.

    Strict: these values end up in API paths and check-run bodies, so a payload with a wrong
    shape raises ``ValueError`` here rather than reaching GitHub (the worker dead-letters it).
    """
    if not isinstance(data, Mapping):
        raise ValueError("pull_request is not an object")
    number = data.get("number")
    if type(number) is not int or number < 1:
        raise ValueError(f"pull_request.number is not a positive integer: {number!r}")
    head, base = data.get("head"), data.get("base")
    if not isinstance(head, Mapping) or not isinstance(base, Mapping):
        raise ValueError("pull_request.head and .base must be objects")
    user = data.get("user") or {}
    author = user.get("login", "") if isinstance(user, Mapping) else ""
    base_ref = base.get("ref")
    if not isinstance(base_ref, str) or not base_ref:
        raise ValueError("pull_request.base.ref is not a branch name")
    state = data.get("state", "open")
    draft = data.get("draft", False)
    return PullRequestInfo(
        number=number,
        author=author if isinstance(author, str) else "",
        head_sha=_sha(head.get("sha"), "pull_request.head.sha"),
        base_sha=_sha(base.get("sha"), "pull_request.base.sha"),
        base_ref=base_ref,
        draft=draft if isinstance(draft, bool) else True,
        state=state if isinstance(state, str) else "unknown",
    )


def _decode_content(data: Any) -> bytes:
    if not isinstance(data, Mapping) or "content" not in data:
        raise GitHubError("GitHub returned no file content", status=None)
    if data.get("encoding", "base64") == "base64":
        return base64.b64decode(data["content"])
    return str(data["content"]).encode()


#: what identifies one annotation in a ``checks/list-annotations`` answer and in what we send
_ANNOTATION_FIELDS = ("path", "start_line", "end_line", "annotation_level", "title", "message")


def _annotation_key(annotation: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(annotation.get(k) or None for k in _ANNOTATION_FIELDS)


def _annotations_of(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    output = body.get("output")
    return list(output.get("annotations") or ()) if isinstance(output, Mapping) else []


def _without_annotations(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """``body`` minus its annotations; None if only the output's title and summary are left."""
    output = {k: v for k, v in body["output"].items() if k != "annotations"}
    rest = {k: v for k, v in body.items() if k != "output"}
    if not rest and set(output) <= {"title", "summary"}:
        return None
    return {**rest, "output": output}
