"""A throwaway PostgreSQL server for the tests: one cluster per session, an empty schema per test.

The cluster is created with the Debian package's binaries (``initdb``, ``pg_ctl``) in a temporary
directory and listens on a free loopback port and a private unix socket; it is stopped and removed
at the end of the session. PostgreSQL refuses to run as root (CI runs as root), so as root the
server runs as the ``postgres`` system user (``runuser``) with the directory owned by it.

Without the binaries the PostgreSQL tests are skipped with the package to install, unless
``PLANGATE_REQUIRE_POSTGRES=1`` (``.ci/run`` sets it when the binaries exist), then they fail.
Durability is off (``fsync=off``): the tests check behaviour, not crash safety of the disk.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["PgServer", "find_pg_bin", "pg_server", "pg_url"]

#: the one database of the cluster the tests use (a schema per test)
_DB = "plangate_test"

_INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) not found: install the Debian package "
    "'postgresql' (apt-get install postgresql) to run the PostgreSQL store tests"
)


def find_pg_bin() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl`` (PATH first, then Debian's layout)."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).parent
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    for initdb in reversed(versions):
        if os.access(initdb, os.X_OK) and os.access(Path(initdb).parent / "pg_ctl", os.X_OK):
            return Path(initdb).parent
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgServer:
    """A running cluster: ``url(dbname)`` connects as its superuser over loopback TCP."""

    port: int
    user: str
    root: Path

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def create_schema(self) -> str:
        """A fresh schema in the shared test database; ``url_for(schema)`` puts it first on the
        search path (a schema is created in well under a millisecond, a database in ~0.1-0.3 s)."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(_DB), autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{name}"')
        return name

    def url_for(self, schema: str) -> str:
        return f"{self.url(_DB)}?options=-c%20search_path%3D{schema}"

    def drop_schema(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url(_DB), autocommit=True) as conn:
            # connections a test left open (a crashed "replica") must not hold the drop up
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (_DB,),
            )
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def _as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser")
    if runuser is None:
        raise RuntimeError("running as root needs runuser (util-linux) to start PostgreSQL")
    return [runuser, "-u", "postgres", "--", *cmd]


def _start(bin_dir: Path) -> PgServer:
    root = Path(tempfile.mkdtemp(prefix="plangate-pg-"))
    data, sock, log = root / "data", root / "sock", root / "server.log"
    sock.mkdir()
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError as exc:
            raise RuntimeError(
                "running as root: PostgreSQL needs a non-root user; the 'postgres' system user "
                "(created by the Debian package) is missing"
            ) from exc
        for path in (root, sock):
            os.chown(path, pw.pw_uid, pw.pw_gid)
    user = "plangate"
    subprocess.run(
        _as_server_user(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                user,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ]
        ),
        check=True,
        capture_output=True,
        cwd=root,
    )
    port = _free_port()
    options = (
        f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300 "
        "-c shared_buffers=32MB"
    )
    subprocess.run(
        _as_server_user(
            [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "start"]
        ),
        check=True,
        capture_output=True,
        cwd=root,
        timeout=60,
    )
    server = PgServer(port=port, user=user, root=root)
    import psycopg

    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {_DB}")
    return server


def _stop(bin_dir: Path, server: PgServer) -> None:
    subprocess.run(
        _as_server_user(
            [str(bin_dir / "pg_ctl"), "-D", str(server.root / "data"), "-m", "immediate", "stop"]
        ),
        check=False,
        capture_output=True,
        cwd=server.root,
        timeout=60,
    )
    shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The session's PostgreSQL cluster (skipped, or failed if required, when not installed)."""
    bin_dir = find_pg_bin()
    if bin_dir is None:
        if os.environ.get("PLANGATE_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PLANGATE_REQUIRE_POSTGRES=1 but {_INSTALL_HINT}", pytrace=False)
        pytest.skip(_INSTALL_HINT)
    try:
        server = _start(bin_dir)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, RuntimeError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        # the binaries are there, so a failure to start is a real problem: never a silent skip
        output = detail.decode(errors="replace")
        pytest.fail(f"cannot start PostgreSQL from {bin_dir}: {exc} {output}", pytrace=False)
    try:
        yield server
    finally:
        _stop(bin_dir, server)


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A URL to an empty database of its own for one test (a fresh schema first on the search
    path); dropped afterwards, with any connection the test left open."""
    name = pg_server.create_schema()
    try:
        yield pg_server.url_for(name)
    finally:
        pg_server.drop_schema(name)
