"""The PostgreSQL test fixture's contract: skip naming the package when the server binaries are
missing, fail instead when ``PLANGATE_REQUIRE_POSTGRES=1`` (as ``.ci/run`` sets it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: the fixtures as a plugin, and a plugin that hides the server binaries
_PYTEST = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "tests.pgcluster"]
_PYTEST += ["-p", "nopg", "-rs"]


def _run_without_binaries(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "nopg.py").write_text("import tests.pgcluster as m\nm.find_pg_bin = lambda: None\n")
    (tmp_path / "test_needs_pg.py").write_text("def test_it(pg_url):\n    assert pg_url\n")
    return subprocess.run(
        [*_PYTEST, "--rootdir", str(tmp_path), str(tmp_path / "test_needs_pg.py")],
        cwd=ROOT,
        env={
            **{k: v for k, v in os.environ.items() if k != "PLANGATE_REQUIRE_POSTGRES"},
            "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_missing_postgres_skips_naming_the_package(tmp_path):
    out = _run_without_binaries(tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 skipped" in out.stdout
    assert "install the Debian package 'postgresql'" in out.stdout


def test_missing_postgres_fails_when_required(tmp_path):
    out = _run_without_binaries(tmp_path, PLANGATE_REQUIRE_POSTGRES="1")
    assert out.returncode != 0
    assert "PLANGATE_REQUIRE_POSTGRES=1 but PostgreSQL server binaries" in out.stdout
