"""A small fake of GitHub's REST API for Plangate's tests and benchmark.

One pure ``handle(method, url, headers, body)`` serves REST shapes from ``@octokit/openapi``;
``install(responses_mock)`` plugs it into ``responses`` (in-process PyGithub tests) and
``serve()`` runs it as a real HTTP server on 127.0.0.1 (end-to-end test, benchmark). Every
request body is validated against the OpenAPI request schema of its operation
(``tests/fixtures/github/openapi-checks-subset.json``); violations land in ``schema_errors``.
Faults are injected with ``fail(...)``: the next N matching requests get a given status (with
``applied=True``, after the request took effect).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jsonschema
import jwt

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "github"
OPENAPI = json.loads((FIXTURES / "openapi-checks-subset.json").read_text())["operations"]


def webhook_fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / "webhooks" / f"{name}.json").read_text())


def git_blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Pull:
    number: int
    head_sha: str
    base_sha: str
    base_ref: str = "main"
    author: str = "Codertocat"
    state: str = "open"
    reviews: list[dict[str, Any]] = field(default_factory=list)
    #: GitHub login of the head commit's author (listed by the commits REST and GraphQL reads)
    commit_author: str | None = None


@dataclass
class Fault:
    method: str
    pattern: re.Pattern[str]
    status: int
    remaining: int
    headers: dict[str, str]
    body: dict[str, Any]
    #: GitHub applied the request before failing (a 5xx after the write): the ambiguous case
    applied: bool = False


@dataclass
class Call:
    method: str
    path: str
    status: int
    body: Any


class FakeRepo:
    def __init__(self, full_name: str) -> None:
        self.full_name = full_name
        self.commits: dict[str, dict[str, bytes]] = {}
        self.branches: dict[str, str] = {}
        self.pulls: dict[int, Pull] = {}
        self.default_branch = "main"

    def commit(
        self, files: dict[str, bytes | str], *, branch: str | None = None, sha: str | None = None
    ) -> str:
        snapshot = {p: c.encode() if isinstance(c, str) else c for p, c in files.items()}
        sha = sha or hashlib.sha1(repr(sorted(snapshot.items())).encode()).hexdigest()
        self.commits[sha] = snapshot
        if branch:
            self.branches[branch] = sha
        return sha

    def blobs(self) -> dict[str, bytes]:
        return {git_blob_sha(c): c for snap in self.commits.values() for c in snap.values()}

    def tree(self, commit: str, prefix: str = "") -> tuple[str, list[dict[str, Any]]]:
        """(tree sha, entries) of ``prefix`` in a commit (one level)."""
        files = self.commits[commit]
        entries: dict[str, dict[str, Any]] = {}
        for path, content in files.items():
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix) :]
            head, _, tail = rest.partition("/")
            if tail:
                sub = prefix + head + "/"
                entries[head] = {
                    "path": head,
                    "mode": "040000",
                    "type": "tree",
                    "sha": self.tree(commit, sub)[0],
                }
            else:
                entries[head] = {
                    "path": head,
                    "mode": "100644",
                    "type": "blob",
                    "sha": git_blob_sha(content),
                    "size": len(content),
                }
        listing = sorted(entries.values(), key=lambda e: e["path"])
        sha = hashlib.sha1(json.dumps(listing, sort_keys=True).encode()).hexdigest()
        return sha, listing

    def tree_by_sha(self, sha: str) -> tuple[str, str] | None:
        for commit in self.commits:
            for prefix in (
                {""}
                | {p.rsplit("/", 1)[0] + "/" for p in self.commits[commit] if "/" in p}
                | _parents(self.commits[commit])
            ):
                if self.tree(commit, prefix)[0] == sha:
                    return commit, prefix
        return None


def _parents(files: dict[str, bytes]) -> set[str]:
    out: set[str] = set()
    for p in files:
        parts = p.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            out.add("/".join(parts[:i]) + "/")
    return out


class FakeGitHub:
    """In-memory GitHub. ``base`` is the API base URL the app is configured with."""

    def __init__(self, base: str = "https://api.github.com") -> None:
        self.base = base.rstrip("/")
        self.prefix = urlsplit(self.base).path.rstrip("/")
        #: GHES serves GraphQL at /api/graphql next to the REST /api/v3
        self.graphql_path = self.prefix.removesuffix("/v3") + "/graphql"
        self.graphql_enabled = True
        self.repos: dict[str, FakeRepo] = {}
        self.check_runs: dict[int, dict[str, Any]] = {}
        self.calls: list[Call] = []
        self.schema_errors: list[str] = []
        self.faults: list[Fault] = []
        self.installations = {1, 957387}
        self.deliveries: list[dict[str, Any]] = []
        self.redelivered: list[int] = []
        self.token_count = 0
        #: installation token -> the App it was issued to (the JWT's ``iss``)
        self.token_apps: dict[str, int | None] = {}
        self.created_pulls: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._etag_seq = 0

    # -- set-up --------------------------------------------------------------------------------

    def repo(self, full_name: str) -> FakeRepo:
        return self.repos.setdefault(full_name, FakeRepo(full_name))

    def fail(
        self,
        method: str,
        pattern: str,
        *,
        status: int,
        times: int,
        headers: dict[str, str] | None = None,
        message: str = "boom",
        applied: bool = False,
    ) -> None:
        """The next ``times`` matching requests get ``status``; with ``applied``, after the
        fake has carried them out (GitHub wrote, then its answer was lost)."""
        self.faults.append(
            Fault(
                method,
                re.compile(pattern),
                status,
                times,
                headers or {},
                {"message": message},
                applied,
            )
        )

    def calls_to(self, method: str, pattern: str) -> list[Call]:
        rx = re.compile(pattern)
        return [c for c in self.calls if c.method == method and rx.search(c.path)]

    def runs_for(self, head_sha: str) -> dict[str, dict[str, Any]]:
        """Check runs on a head SHA by name (the last one created for each name)."""
        out: dict[str, dict[str, Any]] = {}
        for run in self.check_runs.values():
            if run["head_sha"] == head_sha:
                out[run["name"]] = run
        return out

    # -- transport adapters --------------------------------------------------------------------

    def install(self, rsps: Any) -> None:
        parts = urlsplit(self.base)
        host = re.escape(f"{parts.scheme}://{parts.hostname}") + r"(:\d+)?"
        rx = re.compile(host + re.escape(parts.path) + r"(/.*)?$")
        for method in ("GET", "POST", "PATCH", "PUT", "DELETE"):
            rsps.add_callback(method, rx, callback=self._responses_callback)
        if not self.graphql_path.startswith(parts.path + "/"):  # GHES: /api/graphql
            graphql = re.compile(host + re.escape(self.graphql_path) + r"$")
            rsps.add_callback("POST", graphql, callback=self._responses_callback)

    def _responses_callback(self, request: Any) -> tuple[int, dict[str, str], str]:
        body = request.body
        if isinstance(body, bytes):
            body = body.decode()
        status, headers, payload = self.handle(
            request.method, request.url, dict(request.headers), body
        )
        return status, headers, payload

    def serve(self) -> tuple[ThreadingHTTPServer, str]:
        """Run on 127.0.0.1 (random port) in a daemon thread; returns (server, base URL)."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # answer at once: with Nagle on, each keep-alive answer waits ~40 ms for a delayed ACK
            disable_nagle_algorithm = True

            def _do(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length).decode() if length else None
                status, headers, payload = fake.handle(
                    self.command, self.path, dict(self.headers), raw
                )
                data = payload.encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _do

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        host, port = server.server_address[:2]
        self.base = f"http://{host}:{port}{self.prefix}"
        return server, self.base

    # -- the API -------------------------------------------------------------------------------

    def handle(
        self, method: str, url: str, headers: dict[str, str], body: str | None
    ) -> tuple[int, dict[str, str], str]:
        parts = urlsplit(url)
        path = parts.path
        if path == self.graphql_path:
            path = "/graphql"
        elif self.prefix and path.startswith(self.prefix):
            path = path[len(self.prefix) :]
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        data = json.loads(body) if body else None
        with self._lock:
            for fault in self.faults:
                if fault.remaining > 0 and fault.method == method and fault.pattern.search(path):
                    fault.remaining -= 1
                    if fault.applied:
                        self._route(method, path, query, headers, data)
                    self.calls.append(Call(method, path, fault.status, data))
                    return (
                        fault.status,
                        {"Content-Type": "application/json", **fault.headers},
                        (json.dumps(fault.body)),
                    )
            status, out_headers, payload = self._route(method, path, query, headers, data)
            self.calls.append(Call(method, path, status, data))
        hdrs = {
            "Content-Type": "application/json",
            "X-RateLimit-Remaining": "4999",
            "X-RateLimit-Reset": str(int(time.time()) + 3600),
            **out_headers,
        }
        return status, hdrs, "" if payload is None else json.dumps(payload)

    def _validate(self, operation: str, data: Any) -> None:
        schema = OPENAPI[operation]["request_body_schema"]
        validator = jsonschema.Draft4Validator(schema)
        for error in validator.iter_errors(data):
            self.schema_errors.append(f"{operation}: {error.json_path}: {error.message}")

    def _route(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], data: Any
    ) -> tuple[int, dict[str, str], Any]:
        m = re.fullmatch(r"/app/installations/(\d+)/access_tokens", path)
        if m and method == "POST":
            self._validate("apps/create-installation-access-token", data or {})
            if int(m.group(1)) not in self.installations:
                return 404, {}, {"message": "Not Found"}
            self.token_count += 1
            token = f"ghs_fake{self.token_count}"
            self.token_apps[token] = _jwt_app(headers)
            expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
            return (
                201,
                {},
                {
                    "token": token,
                    "expires_at": expires,
                    "permissions": {"checks": "write"},
                    "repository_selection": "all",
                },
            )
        if path == "/graphql" and method == "POST":
            return self._graphql(data or {})
        if path == "/app/hook/deliveries" and method == "GET":
            return 200, {}, self.deliveries
        m = re.fullmatch(r"/app/hook/deliveries/(\d+)/attempts", path)
        if m and method == "POST":
            self.redelivered.append(int(m.group(1)))
            return 202, {}, {}
        m = re.fullmatch(r"/repos/([^/]+/[^/]+)(/.*)?", path)
        if not m or m.group(1) not in self.repos:
            return 404, {}, {"message": "Not Found"}
        return self._repo_route(
            self.repos[m.group(1)], method, m.group(2) or "", query, headers, data
        )

    def _repo_route(
        self,
        repo: FakeRepo,
        method: str,
        sub: str,
        query: dict[str, str],
        headers: dict[str, str],
        data: Any,
    ) -> tuple[int, dict[str, str], Any]:
        if sub == "" and method == "GET":
            return 200, {}, {"full_name": repo.full_name, "default_branch": repo.default_branch}
        m = re.fullmatch(r"/pulls/(\d+)(/files|/reviews|/commits)?", sub)
        if m and method == "GET":
            pull = repo.pulls.get(int(m.group(1)))
            if pull is None:
                return 404, {}, {"message": "Not Found"}
            if m.group(2) is None:
                return 200, {}, _pull_json(repo, pull)
            if m.group(2) == "/reviews":
                return self._etagged(headers, list(pull.reviews))
            if m.group(2) == "/commits":
                author = {"login": pull.commit_author} if pull.commit_author else None
                return 200, {}, [{"sha": pull.head_sha, "author": author, "committer": None}]
            return self._etagged(headers, _files(repo, pull))
        if sub == "/pulls" and method == "GET":
            pulls = [
                p
                for p in repo.pulls.values()
                if p.state == query.get("state", "open")
                and p.base_ref == query.get("base", p.base_ref)
            ]
            return 200, {}, [_pull_json(repo, p) for p in pulls]
        if sub == "/pulls" and method == "POST":
            self._validate("pulls/create", data)
            number = max(repo.pulls, default=0) + 1
            head = repo.branches[data["head"]]
            base = repo.branches[data["base"]]
            repo.pulls[number] = Pull(number, head, base, data["base"])
            self.created_pulls.append(data)
            return (
                201,
                {},
                {
                    "number": number,
                    "html_url": f"https://github.com/{repo.full_name}/pull/{number}",
                },
            )
        m = re.fullmatch(r"/git/blobs/([0-9a-f]{40})", sub)
        if m and method == "GET":
            blob = repo.blobs().get(m.group(1))
            if blob is None:
                return 404, {}, {"message": "Not Found"}
            return (
                200,
                {},
                {
                    "sha": m.group(1),
                    "size": len(blob),
                    "encoding": "base64",
                    "content": base64.b64encode(blob).decode(),
                },
            )
        m = re.fullmatch(r"/git/trees/([0-9a-f]{40})", sub)
        if m and method == "GET":
            return self._tree(repo, m.group(1), recursive=query.get("recursive") == "1")
        m = re.fullmatch(r"/contents/(.+)", sub)
        if m and method == "GET":
            ref = query.get("ref", repo.branches.get(repo.default_branch, ""))
            ref = repo.branches.get(ref, ref)
            content = repo.commits.get(ref, {}).get(m.group(1))
            if content is None:
                return 404, {}, {"message": "Not Found"}
            return (
                200,
                {},
                {
                    "type": "file",
                    "path": m.group(1),
                    "sha": git_blob_sha(content),
                    "encoding": "base64",
                    "content": base64.b64encode(content).decode(),
                },
            )
        if m and method == "PUT":
            self._validate("repos/create-or-update-file-contents", data)
            branch = data["branch"]
            files = dict(repo.commits[repo.branches[branch]])
            files[m.group(1)] = base64.b64decode(data["content"])
            sha = repo.commit(files, branch=branch)
            return 201, {}, {"content": {"path": m.group(1)}, "commit": {"sha": sha}}
        m = re.fullmatch(r"/git/ref/heads/(.+)", sub)
        if m and method == "GET":
            sha = repo.branches.get(m.group(1))
            if sha is None:
                return 404, {}, {"message": "Not Found"}
            return (
                200,
                {},
                {"ref": f"refs/heads/{m.group(1)}", "object": {"sha": sha, "type": "commit"}},
            )
        if sub == "/git/refs" and method == "POST":
            self._validate("git/create-ref", data)
            name = data["ref"].removeprefix("refs/heads/")
            if name in repo.branches:
                return 422, {}, {"message": "Reference already exists"}
            repo.branches[name] = data["sha"]
            return 201, {}, {"ref": data["ref"], "object": {"sha": data["sha"]}}
        if sub == "/check-runs" and method == "POST":
            self._validate("checks/create", data)
            run_id = len(self.check_runs) + 1
            run = {"id": run_id, "annotations": [], **data, "app": {"id": self._app(headers)}}
            run["annotations"] = list((data.get("output") or {}).get("annotations", []))
            self.check_runs[run_id] = run
            return (
                201,
                {},
                {
                    "id": run_id,
                    "name": data["name"],
                    "head_sha": data["head_sha"],
                    "status": data.get("status", "queued"),
                },
            )
        m = re.fullmatch(r"/commits/([0-9a-f]{40})/check-runs", sub)
        if m and method == "GET":  # checks/list-for-ref (filter=all; app_id honoured)
            runs = [
                _run_json(r)
                for r in self.check_runs.values()
                if r["head_sha"] == m.group(1)
                and ("app_id" not in query or str(r["app"]["id"]) == query["app_id"])
                and r["name"] == query.get("check_name", r["name"])
            ]
            return 200, {}, {"total_count": len(runs), "check_runs": runs}
        m = re.fullmatch(r"/check-runs/(\d+)/annotations", sub)
        if m and method == "GET":  # checks/list-annotations (page/per_page honoured)
            run = self.check_runs.get(int(m.group(1)))
            if run is None:
                return 404, {}, {"message": "Not Found"}
            items = [_annotation_json(a) for a in run["annotations"]]
            return self._page(items, f"/repos/{repo.full_name}{sub}", query)
        m = re.fullmatch(r"/check-runs/(\d+)", sub)
        if m and method == "PATCH":
            self._validate("checks/update", data)
            run = self.check_runs.get(int(m.group(1)))
            if run is None:
                return 404, {}, {"message": "Not Found"}
            output = data.get("output") or {}
            run["annotations"].extend(output.get("annotations", []))
            run.update({k: v for k, v in data.items() if k != "output"})
            run["output"] = {**run.get("output", {}), **output}
            return 200, {}, {"id": run["id"], "name": run["name"]}
        m = re.fullmatch(r"/collaborators/([^/]+)/permission", sub)
        if m and method == "GET":
            return 200, {}, {"permission": "write", "user": {"login": m.group(1)}}
        return 404, {}, {"message": f"fake GitHub has no route for {method} {sub}"}

    def _graphql(self, request: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        """The one query Plangate sends (``FILES_QUERY``: a folder's tree with blob texts at
        ``<commit>:<path>``), validated against GitHub's schema subset, answered in its shape."""
        if not self.graphql_enabled:
            return 404, {}, {"message": "Not Found"}
        errors = validate_graphql(request)
        if errors:
            self.schema_errors.extend(f"graphql: {e}" for e in errors)
            return 200, {}, {"errors": [{"message": e} for e in errors]}
        variables = request.get("variables") or {}
        repo = self.repos.get(f"{variables.get('owner')}/{variables.get('name')}")
        if repo is None:
            return (
                200,
                {},
                {
                    "data": {"repository": None},
                    "errors": [
                        {"type": "NOT_FOUND", "message": "Could not resolve to a Repository"}
                    ],
                },
            )
        if "number" in variables:  # reviews and commits of a pull request
            return (
                200,
                {},
                {"data": {"repository": {"pullRequest": _pull_graphql(repo, variables)}}},
            )
        commit, _, folder = str(variables.get("expression", "")).partition(":")
        files = repo.commits.get(commit)
        prefix = folder.rstrip("/") + "/"
        if files is None or not any(p.startswith(prefix) for p in files):
            return 200, {}, {"data": {"repository": {"object": None}}}

        def node(pfx: str, depth: int) -> dict[str, Any]:
            sha, listing = repo.tree(commit, pfx)
            entries = []
            for e in listing:
                entry: dict[str, Any] = {"name": e["path"], "type": e["type"], "oid": e["sha"]}
                if e["type"] == "blob":
                    raw = files[pfx + e["path"]]
                    try:
                        text: str | None = raw.decode("utf-8")
                    except UnicodeDecodeError:
                        text = None
                    entry["object"] = {
                        "text": text,
                        "isBinary": text is None,
                        "isTruncated": False,
                    }
                elif depth < 2:
                    entry["object"] = {"entries": node(pfx + e["path"] + "/", depth + 1)["entries"]}
                else:
                    entry["object"] = {}
                entries.append(entry)
            return {"__typename": "Tree", "oid": sha, "entries": entries}

        return 200, {}, {"data": {"repository": {"object": node(prefix, 1)}}}

    def _page(
        self, items: list[Any], path: str, query: dict[str, str]
    ) -> tuple[int, dict[str, str], Any]:
        """One page of a list endpoint, with GitHub's ``Link: rel="next"`` when more follow."""
        per_page = int(query.get("per_page", 30))
        page = int(query.get("page", 1))
        out = items[(page - 1) * per_page : page * per_page]
        headers = {}
        if page * per_page < len(items):
            url = f"{self.base}{path}?per_page={per_page}&page={page + 1}"
            headers["Link"] = f'<{url}>; rel="next"'
        return 200, headers, out

    def _app(self, headers: dict[str, str]) -> int | None:
        auth = {k.lower(): v for k, v in headers.items()}.get("authorization", "")
        return self.token_apps.get(auth.split(" ")[-1])

    def _etagged(self, headers: dict[str, str], payload: Any) -> tuple[int, dict[str, str], Any]:
        etag = '"' + hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest() + '"'
        inm = {k.lower(): v for k, v in headers.items()}.get("if-none-match")
        if inm == etag:
            return 304, {"ETag": etag}, None
        return 200, {"ETag": etag}, payload

    def _tree(self, repo: FakeRepo, sha: str, *, recursive: bool) -> tuple[int, dict, Any]:
        if sha in repo.commits:
            commit, prefix = sha, ""
        else:
            found = repo.tree_by_sha(sha)
            if found is None:
                return 404, {}, {"message": "Not Found"}
            commit, prefix = found
        tree_sha, entries = repo.tree(commit, prefix)
        if recursive:
            entries = [
                {
                    "path": p[len(prefix) :],
                    "type": "blob",
                    "mode": "100644",
                    "sha": git_blob_sha(c),
                    "size": len(c),
                }
                for p, c in sorted(repo.commits[commit].items())
                if p.startswith(prefix)
            ]
        return 200, {}, {"sha": tree_sha, "tree": entries, "truncated": False}


def validate_graphql(request: dict[str, Any]) -> list[str]:
    """Errors of a GraphQL request against the schema subset (empty when valid)."""
    from graphql import build_schema, parse, validate
    from graphql.error import GraphQLSyntaxError

    global _SCHEMA
    if _SCHEMA is None:
        _SCHEMA = build_schema((FIXTURES / "graphql-subset.graphql").read_text())
    try:
        document = parse(str(request.get("query", "")))
    except GraphQLSyntaxError as exc:
        return [str(exc)]
    errors = [e.message for e in validate(_SCHEMA, document)]
    names = {v.variable.name.value for op in document.definitions for v in op.variable_definitions}
    missing = names - set(request.get("variables") or {})
    return errors + [f"variable ${n} not given" for n in sorted(missing)]


_SCHEMA: Any = None


def _pull_graphql(repo: FakeRepo, variables: dict[str, Any]) -> dict[str, Any] | None:
    """``pullRequest { headRefOid reviews commits }`` from the same data the REST routes use."""
    pull = repo.pulls.get(int(variables["number"]))
    if pull is None:
        return None
    reviews = [
        {
            "databaseId": r["id"],
            "author": {"login": (r.get("user") or {}).get("login")} if r.get("user") else None,
            "state": r["state"],
            "commit": {"oid": r["commit_id"]} if r.get("commit_id") else None,
            "submittedAt": r.get("submitted_at"),
        }
        for r in pull.reviews
    ]
    author = {"user": {"login": pull.commit_author}} if pull.commit_author else None
    commits = [{"commit": {"oid": pull.head_sha, "author": author, "committer": None}}]
    return {
        "headRefOid": pull.head_sha,
        "reviews": {"totalCount": len(reviews), "nodes": reviews[:100]},
        "commits": {"totalCount": len(commits), "nodes": commits},
    }


def _jwt_app(headers: dict[str, str]) -> int | None:
    """The App id (``iss``) of the App JWT a token request is authenticated with."""
    auth = {k.lower(): v for k, v in headers.items()}.get("authorization", "")
    try:
        claims = jwt.decode(auth.split(" ")[-1], options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    try:
        return int(claims["iss"])
    except (KeyError, TypeError, ValueError):
        return None


def _annotation_json(sent: dict[str, Any]) -> dict[str, Any]:
    """A stored annotation in the ``checks/list-annotations`` item shape (@octokit/openapi)."""
    return {
        "path": sent["path"],
        "start_line": sent["start_line"],
        "end_line": sent["end_line"],
        "start_column": sent.get("start_column"),
        "end_column": sent.get("end_column"),
        "annotation_level": sent.get("annotation_level"),
        "title": sent.get("title", ""),
        "message": sent.get("message"),
        "raw_details": sent.get("raw_details", ""),
        "blob_href": f"https://github.com/blob/{sent['path']}",
    }


def _run_json(run: dict[str, Any]) -> dict[str, Any]:
    """A stored run in the ``checks/list-for-ref`` item shape (@octokit/openapi)."""
    return {
        "id": run["id"],
        "name": run["name"],
        "head_sha": run["head_sha"],
        "external_id": run.get("external_id", ""),
        "status": run.get("status", "queued"),
        "conclusion": run.get("conclusion"),
        "app": run["app"],
    }


def _pull_json(repo: FakeRepo, pull: Pull) -> dict[str, Any]:
    return {
        "number": pull.number,
        "state": pull.state,
        "draft": False,
        "user": {"login": pull.author},
        "head": {"sha": pull.head_sha, "ref": f"pr-{pull.number}"},
        "base": {"sha": pull.base_sha, "ref": pull.base_ref},
    }


def _files(repo: FakeRepo, pull: Pull) -> list[dict[str, Any]]:
    head = repo.commits[pull.head_sha]
    base = repo.commits[pull.base_sha]
    out = []
    for path in sorted(set(head) | set(base)):
        if path in head and path not in base:
            status = "added"
        elif path not in head:
            status = "removed"
        elif head[path] != base[path]:
            status = "modified"
        else:
            continue
        content = head.get(path, base.get(path, b""))
        out.append(
            {
                "sha": git_blob_sha(content),
                "filename": path,
                "status": status,
                "additions": 1,
                "deletions": 0,
                "changes": 1,
            }
        )
    return out


def noop(*_: object) -> None:
    pass


Sleep = Callable[[float], None]
