"""``FakeGitHub`` plus the git-data writes the attestation store makes.

``POST git/blobs``, ``POST git/trees``, ``POST git/commits``, ``GET git/commits/{sha}``,
``PATCH git/refs/heads/{branch}`` (fast-forward only unless ``force``), with every request body
validated against its ``@octokit/openapi`` schema like the rest of the fake. ``on_ref_write``
hooks run just before a ref is created or moved, so a test can make another writer win the race.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable
from typing import Any

from ghfake import FakeGitHub, FakeRepo, git_blob_sha

RefHook = Callable[[FakeRepo, str], None]


class GitDataGitHub(FakeGitHub):
    def __init__(self, base: str = "https://api.github.com") -> None:
        super().__init__(base)
        self.git_blobs: dict[str, bytes] = {}
        self.git_trees: dict[str, dict[str, bytes]] = {}
        self.git_commits: dict[str, dict[str, Any]] = {}
        self.on_ref_write: list[RefHook] = []
        #: merge commit SHA -> the merged pull request (``GET commits/{sha}/pulls``)
        self.merged: dict[str, dict[str, Any]] = {}
        #: bodies of deployment protection rule reviews, with the run id
        self.deployment_reviews: list[tuple[int, dict[str, Any]]] = []
        #: ``owner/name`` -> GitHub's repository id, served as ``base.repo.id`` of pulls
        self.repo_ids: dict[str, int] = {}

    # -- helpers for tests ---------------------------------------------------------------------

    def files_on(self, repo: FakeRepo, branch: str) -> dict[str, bytes]:
        return dict(repo.commits[repo.branches[branch]])

    def history(self, repo: FakeRepo, branch: str) -> list[str]:
        """Commit SHAs from the branch tip back to its root (first parents)."""
        out: list[str] = []
        sha: str | None = repo.branches.get(branch)
        while sha:
            out.append(sha)
            parents = self.git_commits.get(sha, {}).get("parents", [])
            sha = parents[0] if parents else None
        return out

    def write_commit(
        self, repo: FakeRepo, files: dict[str, bytes], parents: list[str], message: str
    ) -> str:
        tree = self._tree_sha(files)
        self.git_trees[tree] = dict(files)
        sha = hashlib.sha1(f"{tree}{parents}{message}".encode()).hexdigest()
        repo.commit(files, sha=sha)
        self.git_commits[sha] = {"tree": tree, "parents": list(parents), "message": message}
        return sha

    def advance(self, repo: FakeRepo, branch: str, path: str, content: bytes) -> str:
        """Another writer adds a file on ``branch`` (fast-forward)."""
        parent = repo.branches[branch]
        files = {**repo.commits[parent], path: content}
        sha = self.write_commit(repo, files, [parent], f"other writer: {path}")
        repo.branches[branch] = sha
        return sha

    # -- routes ---------------------------------------------------------------------------------

    def _repo_route(
        self,
        repo: FakeRepo,
        method: str,
        sub: str,
        query: dict[str, str],
        headers: dict[str, str],
        data: Any,
    ) -> tuple[int, dict[str, str], Any]:
        m = re.fullmatch(r"/commits/([0-9a-f]{40})/pulls", sub)
        if m and method == "GET":
            pr = self.merged.get(m.group(1))
            return 200, {}, [pr] if pr else []
        m = re.fullmatch(r"/actions/runs/(\d+)/deployment_protection_rule", sub)
        if m and method == "POST":
            self._validate("actions/review-custom-gates-for-run", data)
            self.deployment_reviews.append((int(m.group(1)), data))
            return 204, {}, None
        if sub == "/git/blobs" and method == "POST":
            self._validate("git/create-blob", data)
            raw = data["content"]
            content = base64.b64decode(raw) if data.get("encoding") == "base64" else raw.encode()
            sha = git_blob_sha(content)
            self.git_blobs[sha] = content
            return 201, {}, {"sha": sha, "url": f"blobs/{sha}"}
        if sub == "/git/trees" and method == "POST":
            self._validate("git/create-tree", data)
            base = data.get("base_tree")
            if base is not None and base not in self.git_trees:
                return 422, {}, {"message": "base_tree is not a valid tree"}
            files = dict(self.git_trees.get(base, {})) if base else {}
            for entry in data["tree"]:
                blob = self.git_blobs.get(entry["sha"]) or repo.blobs().get(entry["sha"])
                if blob is None:
                    return 422, {}, {"message": f"unknown blob {entry['sha']}"}
                files[entry["path"]] = blob
            sha = self._tree_sha(files)
            self.git_trees[sha] = files
            return 201, {}, {"sha": sha, "tree": [], "truncated": False}
        if sub == "/git/commits" and method == "POST":
            self._validate("git/create-commit", data)
            tree = self.git_trees.get(data["tree"])
            if tree is None or any(p not in repo.commits for p in data.get("parents", [])):
                return 422, {}, {"message": "unknown tree or parent"}
            sha = self.write_commit(repo, tree, list(data.get("parents", [])), data["message"])
            return 201, {}, self._commit_json(sha)
        if sub.startswith("/git/commits/") and method == "GET":
            sha = sub.rsplit("/", 1)[1]
            if sha not in repo.commits:
                return 404, {}, {"message": "Not Found"}
            if sha not in self.git_commits:  # a commit made by FakeRepo.commit: no parents
                files = repo.commits[sha]
                tree = self._tree_sha(files)
                self.git_trees[tree] = dict(files)
                self.git_commits[sha] = {"tree": tree, "parents": [], "message": ""}
            return 200, {}, self._commit_json(sha)
        if sub == "/git/refs" and method == "POST":
            for hook in list(self.on_ref_write):
                hook(repo, data["ref"].removeprefix("refs/heads/"))
        if sub.startswith("/git/refs/heads/") and method == "PATCH":
            self._validate("git/update-ref", data)
            branch = sub.removeprefix("/git/refs/heads/")
            for hook in list(self.on_ref_write):
                hook(repo, branch)
            current = repo.branches.get(branch)
            if current is None:
                return 422, {}, {"message": "Reference does not exist"}
            if not data.get("force") and current not in self._ancestors(data["sha"]):
                return 422, {}, {"message": "Update is not a fast forward"}
            repo.branches[branch] = data["sha"]
            return 200, {}, {"ref": f"refs/heads/{branch}", "object": {"sha": data["sha"]}}
        status, out_headers, payload = super()._repo_route(repo, method, sub, query, headers, data)
        if (
            method == "GET"
            and re.fullmatch(r"/pulls/\d+", sub)
            and status == 200
            and repo.full_name in self.repo_ids
        ):
            payload["base"]["repo"] = {"id": self.repo_ids[repo.full_name]}
        return status, out_headers, payload

    def _ancestors(self, sha: str) -> set[str]:
        seen: set[str] = set()
        todo = [sha]
        while todo:
            s = todo.pop()
            if s not in seen:
                seen.add(s)
                todo.extend(self.git_commits.get(s, {}).get("parents", []))
        return seen

    def _commit_json(self, sha: str) -> dict[str, Any]:
        meta = self.git_commits[sha]
        return {
            "sha": sha,
            "message": meta["message"],
            "tree": {"sha": meta["tree"]},
            "parents": [{"sha": p} for p in meta["parents"]],
        }

    @staticmethod
    def _tree_sha(files: dict[str, bytes]) -> str:
        listing = sorted((p, git_blob_sha(c)) for p, c in files.items())
        return hashlib.sha1(repr(listing).encode()).hexdigest()
