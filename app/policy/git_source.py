"""Adapter: policy files and base versions of plans read from a git ref (GitPython).

On a pull request the policy is ALWAYS read from the base ref, never from the head under review:
a pull request cannot approve itself by editing ``policies/``. This is the only module of
``app.policy`` that touches git; the loader it feeds (``load_policy_files``) is pure.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import git

from app.errors import InputError, Issue, PolicyLoadError
from app.policy.loader import POLICY_SUFFIXES, PolicySet, load_policy_files

__all__ = [
    "GitTree",
    "load_policies_at",
]


class GitTree:
    """Read-only view of one repository: files at refs, and what changed since a base."""

    def __init__(self, path: str | Path = ".") -> None:
        try:
            self.repo = git.Repo(path, search_parent_directories=True)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError) as exc:
            raise InputError(
                f"{path}: not inside a git repository",
                hint="--base needs a git checkout; run from the repository",
            ) from exc
        self.root = Path(self.repo.working_tree_dir or ".").resolve()

    def _commit(self, ref: str) -> git.Commit:
        try:
            return self.repo.commit(ref)
        except (git.BadName, ValueError) as exc:
            raise InputError(
                f"git ref '{ref}' does not exist in {self.root}",
                hint="fetch the base branch (e.g. git fetch origin main) or pass an existing ref",
            ) from exc

    def relative(self, path: str | Path) -> str:
        """Repository-relative POSIX path of a working-tree path."""
        p = Path(path).resolve()
        try:
            return p.relative_to(self.root).as_posix()
        except ValueError:
            return Path(path).as_posix()

    def files_at(self, ref: str, directory: str) -> dict[str, bytes]:
        """Every file under ``directory`` at ``ref``: ``{repo-relative path: bytes}``."""
        tree = self._commit(ref).tree
        directory = directory.strip("/")
        try:
            sub = tree / directory if directory not in ("", ".") else tree
        except KeyError:
            return {}
        out: dict[str, bytes] = {}
        for item in sub.traverse():
            if item.type == "blob":
                out[str(PurePosixPath(item.path))] = item.data_stream.read()
        return out

    def blob_at(self, ref: str, path: str) -> bytes | None:
        try:
            return (self._commit(ref).tree / path).data_stream.read()
        except KeyError:
            return None

    def changes_since(self, base: str) -> dict[str, tuple[str, ...]]:
        """Paths changed from the merge base of ``base`` and HEAD to the working tree (like a
        pull request's diff), with the authors of the commits that touched each path."""
        head = self.repo.head.commit
        bases = self.repo.merge_base(self._commit(base), head)
        mb = bases[0] if bases else self._commit(base)
        paths: set[str] = set()
        for d in mb.diff(None):
            paths.update(p for p in (d.a_path, d.b_path) if p)
        paths.update(self.repo.untracked_files)
        authors: dict[str, set[str]] = {p: set() for p in paths}
        for commit in self.repo.iter_commits(f"{mb.hexsha}..{head.hexsha}"):
            for path in commit.stats.files:
                if str(path) in authors:
                    authors[str(path)].add(str(commit.author.name))
        return {p: tuple(sorted(a)) for p, a in sorted(authors.items())}


def load_policies_at(tree: GitTree, ref: str, directory: str = "policies") -> PolicySet:
    """The policy set at ``ref`` (on a pull request: the base ref). Fails closed."""
    rel = tree.relative(directory) if Path(directory).is_absolute() else directory.strip("/")
    files = {p: b for p, b in tree.files_at(ref, rel).items() if p.endswith(POLICY_SUFFIXES)}
    origin = f"{rel}/ at {ref}"
    if not files:
        raise PolicyLoadError(
            [
                Issue(
                    origin,
                    f"no policy files in {rel}/ at git ref '{ref}': refusing to judge "
                    "plans without a policy",
                    "policy.none",
                )
            ],
            hint="the base branch must carry policies/; merge them there first",
        )
    return load_policy_files(files, origin=origin)
