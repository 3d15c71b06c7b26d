"""The git data API of one fake repository: refs (any namespace), commits, trees, blobs.

Semantics as GitHub documents them (REST "Git database"): ``POST git/refs`` answers 422
"Reference already exists" when the ref exists (the atomic create a lock relies on);
``PATCH git/refs/{ref}`` with ``force: false`` answers 422 "Update is not a fast forward" unless
the new commit descends from the ref's current commit (the compare-and-swap); ``DELETE`` answers
204. Request bodies are validated against ``@octokit/openapi`` through ``validate``; responses
start from the documented examples. ``before_write`` hooks run just before a ref is created,
moved or deleted, so a test can let another writer win a race at the worst moment.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import re
import threading
from collections.abc import Callable
from typing import Any


def blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class GitRefsFake:
    def __init__(self, openapi: dict[str, Any], validate: Callable[[str, Any], None]) -> None:
        self.openapi = openapi
        self.validate = validate
        self.refs: dict[str, str] = {}
        self.commits: dict[str, dict[str, Any]] = {}
        self.trees: dict[str, dict[str, bytes]] = {}
        self.blobs: dict[str, bytes] = {}
        self.before_write: list[Callable[[str, str], None]] = []
        self.writes: list[tuple[str, str, Any]] = []
        self._lock = threading.RLock()

    # -- helpers for tests -----------------------------------------------------------------------

    def commit(self, files: dict[str, bytes], parents: list[str], message: str) -> str:
        tree = self._tree_sha(files)
        self.trees[tree] = dict(files)
        sha = hashlib.sha1(f"{tree}{parents}{message}".encode()).hexdigest()
        self.commits[sha] = {"tree": tree, "parents": list(parents), "message": message}
        return sha

    def files(self, ref: str) -> dict[str, bytes]:
        sha = self.resolve(ref)
        return dict(self.trees[self.commits[sha]["tree"]]) if sha else {}

    def resolve(self, ref: str) -> str | None:
        """A branch name, a full ref or a commit SHA -> commit SHA (None if unknown)."""
        if ref in self.commits:
            return ref
        for name in (ref, f"refs/heads/{ref}"):
            if name in self.refs:
                return self.refs[name]
        return None

    def file_at(self, path: str, ref: str) -> bytes | None:
        sha = self.resolve(ref)
        if sha is None:
            return None
        return self.trees[self.commits[sha]["tree"]].get(path)

    def message(self, ref: str) -> str:
        sha = self.resolve(ref)
        assert sha is not None
        return self.commits[sha]["message"]

    def history(self, ref: str) -> list[str]:
        out: list[str] = []
        sha = self.resolve(ref)
        while sha:
            out.append(sha)
            parents = self.commits[sha]["parents"]
            sha = parents[0] if parents else None
        return out

    # -- routes (``sub`` is the path after /repos/{owner}/{repo}) ----------------------------------

    def route(self, method: str, sub: str, body: Any) -> tuple[int, Any] | None:
        with self._lock:
            return self._route(method, sub, body)

    def _route(self, method: str, sub: str, body: Any) -> tuple[int, Any] | None:
        m = re.fullmatch(r"/git/ref/(.+)", sub)
        if m and method == "GET":
            ref = "refs/" + m.group(1)
            if ref not in self.refs:
                return 404, {"message": "Not Found"}
            return 200, self._ref_json(ref)
        if sub == "/git/refs" and method == "POST":
            self.validate("git/create-ref", body)
            ref = body["ref"]
            if not ref.startswith("refs/") or ref.count("/") < 2:
                return 422, {"message": "Reference name is invalid"}
            self._hooks(ref, "create")
            if ref in self.refs:
                return 422, {"message": "Reference already exists"}
            if body["sha"] not in self.commits:
                return 422, {"message": "Object does not exist"}
            self.refs[ref] = body["sha"]
            self.writes.append(("create", ref, body["sha"]))
            return 201, self._ref_json(ref)
        m = re.fullmatch(r"/git/refs/(.+)", sub)
        if m and method == "PATCH":
            self.validate("git/update-ref", body)
            ref = "refs/" + m.group(1)
            self._hooks(ref, "update")
            current = self.refs.get(ref)
            if current is None:
                return 422, {"message": "Reference does not exist"}
            if body["sha"] not in self.commits:
                return 422, {"message": "Object does not exist"}
            if not body.get("force") and current not in self._ancestors(body["sha"]):
                return 422, {"message": "Update is not a fast forward"}
            self.refs[ref] = body["sha"]
            self.writes.append(("update", ref, body["sha"]))
            return 200, self._ref_json(ref)
        if m and method == "DELETE":
            ref = "refs/" + m.group(1)
            self._hooks(ref, "delete")
            if ref not in self.refs:
                return 422, {"message": "Reference does not exist"}
            del self.refs[ref]
            self.writes.append(("delete", ref, None))
            return 204, None
        if sub == "/git/blobs" and method == "POST":
            self.validate("git/create-blob", body)
            raw = body["content"]
            data = base64.b64decode(raw) if body.get("encoding") == "base64" else raw.encode()
            sha = blob_sha(data)
            self.blobs[sha] = data
            return 201, {"sha": sha, "url": f"https://api.github.com/git/blobs/{sha}"}
        if sub == "/git/trees" and method == "POST":
            self.validate("git/create-tree", body)
            base = body.get("base_tree")
            if base is not None and base not in self.trees:
                return 422, {"message": "base_tree is not a valid tree"}
            files = dict(self.trees.get(base, {})) if base else {}
            for entry in body["tree"]:
                if entry.get("content") is not None:
                    data = entry["content"].encode()
                else:
                    data = self.blobs.get(entry.get("sha") or "")
                    if data is None:
                        return 422, {"message": f"unknown blob {entry.get('sha')}"}
                files[entry["path"]] = data
            sha = self._tree_sha(files)
            self.trees[sha] = files
            doc = copy.deepcopy(self.openapi["git/create-tree"]["examples"]["201"])
            doc.update(sha=sha, truncated=False)
            return 201, doc
        if sub == "/git/commits" and method == "POST":
            self.validate("git/create-commit", body)
            if body["tree"] not in self.trees or any(
                p not in self.commits for p in body.get("parents", [])
            ):
                return 422, {"message": "Tree SHA does not exist"}
            sha = self.commit(
                self.trees[body["tree"]], list(body.get("parents", [])), body["message"]
            )
            return 201, self._commit_json(sha)
        m = re.fullmatch(r"/git/trees/([0-9a-f]{40})", sub)
        if m and method == "GET":  # always answered recursively (the executor asks for that)
            files = self.trees.get(m.group(1))
            if files is None:
                return 404, {"message": "Not Found"}
            doc = copy.deepcopy(self.openapi["git/get-tree"]["examples"]["200"])
            entry = doc["tree"][0]
            doc.update(sha=m.group(1), truncated=False, tree=[])
            for path, data in sorted(files.items()):
                self.blobs[blob_sha(data)] = data
                doc["tree"].append(
                    {
                        **entry,
                        "path": path,
                        "type": "blob",
                        "sha": blob_sha(data),
                        "size": len(data),
                    }
                )
            return 200, doc
        m = re.fullmatch(r"/git/blobs/([0-9a-f]{40})", sub)
        if m and method == "GET":
            data = self.blobs.get(m.group(1))
            if data is None:
                return 404, {"message": "Not Found"}
            doc = copy.deepcopy(self.openapi["git/get-blob"]["examples"]["200"])
            doc.update(
                sha=m.group(1),
                size=len(data),
                encoding="base64",
                content=base64.b64encode(data).decode(),
            )
            return 200, doc
        m = re.fullmatch(r"/git/commits/([0-9a-f]{40})", sub)
        if m and method == "GET":
            if m.group(1) not in self.commits:
                return 404, {"message": "Not Found"}
            return 200, self._commit_json(m.group(1))
        return None

    def _hooks(self, ref: str, what: str) -> None:
        for hook in list(self.before_write):
            hook(ref, what)

    def _ref_json(self, ref: str) -> dict[str, Any]:
        doc = copy.deepcopy(self.openapi["git/get-ref"]["examples"]["200"])
        doc["ref"] = ref
        doc["object"] = {**doc["object"], "type": "commit", "sha": self.refs[ref]}
        return doc

    def _commit_json(self, sha: str) -> dict[str, Any]:
        meta = self.commits[sha]
        doc = copy.deepcopy(self.openapi["git/get-commit"]["examples"]["200"])
        doc.update(
            sha=sha,
            message=meta["message"],
            tree={**doc["tree"], "sha": meta["tree"]},
            parents=[{"sha": p, "url": "", "html_url": ""} for p in meta["parents"]],
        )
        return doc

    def _ancestors(self, sha: str) -> set[str]:
        seen: set[str] = set()
        todo = [sha]
        while todo:
            s = todo.pop()
            if s not in seen:
                seen.add(s)
                todo.extend(self.commits.get(s, {}).get("parents", []))
        return seen

    @staticmethod
    def _tree_sha(files: dict[str, bytes]) -> str:
        listing = sorted((p, blob_sha(c)) for p, c in files.items())
        return hashlib.sha1(repr(listing).encode()).hexdigest()
