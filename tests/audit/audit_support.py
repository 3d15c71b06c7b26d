"""Audit test support: a draft factory and a git history rewriter (imported by tests)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import git

from app.audit.events import Actor, AuditEventDraft

T0 = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
DIGEST = "sha256:" + "ab" * 32


def draft(i: int = 0, **overrides: Any) -> AuditEventDraft:
    """A plausible event; ``i`` spreads it over plans, runs, steps, teams and time."""
    fields: dict[str, Any] = {
        "type": ("run.started", "step.started", "step.succeeded", "run.finished")[i % 4],
        "timestamp": T0 + timedelta(seconds=i),
        "actor": Actor(kind="user" if i % 2 else "app", id=f"user{i % 3}"),
        "correlation_id": f"run-{i % 5}",
        "plan_id": f"plan-{i % 7}",
        "plan_digest": DIGEST,
        "inputs_digest": DIGEST,
        "step": f"step-{i % 2}",
        "team": ("payments", "search")[i % 2],
        "environment": ("prod", "staging", "dev")[i % 3],
        "payload": {"i": i, "note": "ok"},
    }
    fields.update(overrides)
    return AuditEventDraft(**fields)


# -- rewriting history like an attacker would (plumbing, bypassing GitAuditStore) --------------


def build_commit(
    repo: git.Repo,
    parent: str | None,
    message: str,
    add: dict[str, bytes] | None = None,
    remove: tuple[str, ...] = (),
    tmp_index: Path | None = None,
) -> str:
    """A commit on ``parent`` whose tree adds/replaces ``add`` and drops ``remove``."""
    index = tmp_index or Path(repo.git_dir) / "attacker-index"
    env = {"GIT_INDEX_FILE": str(index)}
    g = repo.git
    g.read_tree(parent if parent else "--empty", env=env)
    for path, data in (add or {}).items():
        sha = g.hash_object("-w", "--stdin", istream=_tmpfile(data))
        g.update_index("--add", "--cacheinfo", f"100644,{sha},{path}", env=env)
    for path in remove:
        g.update_index("--force-remove", path, env=env)
    tree = g.write_tree(env=env)
    args = [tree, "-m", message] + (["-p", parent] if parent else [])
    return g.commit_tree(*args)


def _tmpfile(data: bytes):
    import tempfile

    fh = tempfile.TemporaryFile()  # noqa: SIM115 (GitPython reads and closes it)
    fh.write(data)
    fh.seek(0)
    return fh


def commit_history(repo: git.Repo, ref: str) -> list[dict[str, Any]]:
    """Each commit of ``ref`` (root first) as {message, files added: {path: bytes}}."""
    out = []
    prev: dict[str, str] = {}
    for c in repo.iter_commits(ref, reverse=True, first_parent=True):
        files = {b.path: b.hexsha for b in c.tree.traverse() if b.type == "blob"}
        added = {
            p: repo.odb.stream(bytes.fromhex(s)).read()
            for p, s in files.items()
            if prev.get(p) != s
        }
        out.append({"message": c.message, "files": added})
        prev = files
    return out


def rewrite_history(
    repo: git.Repo, ref: str, edit: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]
) -> str:
    """Rebuild ``ref`` from edited commits (message + added files), force-moving the ref."""
    commits = edit(commit_history(repo, ref))
    parent: str | None = None
    for c in commits:
        parent = build_commit(repo, parent, c["message"], c["files"])
    assert parent is not None
    repo.git.update_ref(ref, parent)
    return parent
