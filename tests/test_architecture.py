"""Dependency direction: the pure core imports no I/O adapter (see docs/architecture.md).

Parsed with ``ast`` (no imports executed), so a violation is reported with file and line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "app"

#: the pure core: these get their world as arguments
CORE = [
    "plan",
    "actions/registry.py",
    "actions/builtin.py",
    "policy",
    "cost.py",
    "cost",
    "approvals/gate.py",
    "approvals/context.py",
    "approvals/attest.py",
    "approvals/run_attest.py",
    "approvals/render.py",
    "execute/scheduler.py",
    "execute/retry.py",
    "execute/saga.py",
    "execute/refs.py",
    "audit/events.py",
    "audit/query.py",
    "audit/store.py",
    "dashboard/data.py",
    "yaml_source.py",
    "check.py",
]
#: adapters living inside core packages (they are the edge by design)
ADAPTER_EXCEPTIONS = {"policy/git_source.py"}
FORBIDDEN = {"github", "git", "sigstore", "fastapi", "requests", "httpx", "uvicorn", "starlette"}


def _core_files() -> list[Path]:
    files: list[Path] = []
    for entry in CORE:
        path = ROOT / entry
        if path.is_dir():
            files.extend(sorted(path.rglob("*.py")))
        elif path.exists():
            files.append(path)
    return [f for f in files if str(f.relative_to(ROOT)) not in ADAPTER_EXCEPTIONS]


def _violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            if name.split(".")[0] in FORBIDDEN:
                found.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}: imports {name}")
        if (
            isinstance(node, ast.Attribute)
            and node.attr == "environ"
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
        ):
            found.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}: reads os.environ")
    return found


def test_core_files_exist():
    assert len(_core_files()) >= 8


@pytest.mark.parametrize("path", _core_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_module_imports_no_adapter(path: Path):
    assert _violations(path) == []


def test_only_settings_and_cli_read_environ():
    offenders = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        if rel == "settings.py" or rel.startswith("cli"):
            continue
        offenders += [v for v in _violations(path) if "os.environ" in v]
    assert offenders == []
