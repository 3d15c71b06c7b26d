"""Planted secrets never appear in any output of a full scenario.

Two scenarios, each scanning *everything* it produced for the planted values:

- ``plangate run`` (the embedded default: keygen -> attest -> run) of plans that hand a GitHub
  token and a PEM private key to a ``shell`` step (``secret_env``) that prints them to stdout and
  stderr and fails, and to an ``http`` step (``secret_headers``) against a 127.0.0.1 server that
  answers 500 with the secret echoed in the body. Scanned: captured stdout/stderr, log records,
  the result JSON, every file under the data dir (state DB rows, events.jsonl, incidents), every
  object of the audit git repository, the attestations.
- the webhook server with the App's private key, the webhook secret and installation tokens:
  check-run bodies sent to (fake) GitHub, log records, inbox rows, HTTP answers, including a
  GitHub outage that dead-letters a delivery with its error recorded.
"""

from __future__ import annotations

import json
import logging
import secrets as pysecrets
import shutil
import sqlite3
import string
import subprocess
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from srvkit import HEAD, SECRET, create_app, make_deps, post, webhook_fixture

from app.cli import main
from app.server.engine import PolicyEngineEvaluator
from app.server.worker import WorkerPolicy

ROOT = Path(__file__).resolve().parents[2]


def _token() -> str:
    alphabet = string.ascii_letters + string.digits
    return "ghs_" + "".join(pysecrets.choice(alphabet) for _ in range(36))


def _pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _needles(*values: str) -> list[str]:
    """What must never be found: each value, and each base64 line of a PEM on its own."""
    out: list[str] = []
    for value in values:
        if "-----BEGIN" in value:
            out += [line for line in value.splitlines() if line and not line.startswith("-----")]
        else:
            out.append(value)
    return out


def _scan(where: str, text: str | bytes, needles: list[str]) -> None:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    for needle in needles:
        assert needle not in text, f"planted secret {needle[:8]}... leaked into {where}"
        # JSON-escaped or repr'd forms of the same bytes
        assert json.dumps(needle)[1:-1] not in text, f"secret leaked (escaped) into {where}"


def _scan_sqlite(path: Path, needles: list[str]) -> int:
    rows = 0
    conn = sqlite3.connect(path)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):  # table names from the schema
                rows += 1
                _scan(f"{path.name}:{table}", repr(row), needles)
    finally:
        conn.close()
    return rows


def _scan_tree(root: Path, needles: list[str], *, skip: tuple[Path, ...] = ()) -> int:
    """Every file under ``root`` (raw bytes; git objects inflated; SQLite rows queried)."""
    files = 0
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if any(path.is_relative_to(s) for s in skip):
            continue
        files += 1
        raw = path.read_bytes()
        if "/objects/" in path.as_posix() and "/pack/" not in path.as_posix():
            raw = zlib.decompress(raw)
        _scan(str(path.relative_to(root)), raw, needles)
        if raw.startswith(b"SQLite format 3"):
            _scan_sqlite(path, needles)
    return files


def _scan_git(repo: Path, needles: list[str]) -> int:
    """Every object of a git repository, packed or loose, as git itself prints it."""
    out = subprocess.run(
        ["git", "-C", str(repo), "cat-file", "--batch-all-objects", "--batch"],
        check=True,
        capture_output=True,
    ).stdout
    _scan(f"git objects of {repo.name}", out, needles)
    return out.count(b"\n")


def _scan_logs(records: list[logging.LogRecord], needles: list[str]) -> int:
    """Plangate's own records at every level; third-party records at WARNING and above.

    Why not third-party DEBUG: httpcore logs *response* headers at DEBUG, so a hostile server
    that echoes a credential back gets it into httpcore's debug log. Plangate never enables
    DEBUG for libraries (docs/security.md says not to); its own loggers must be clean at any
    level.
    """
    scanned = 0
    for record in records:
        if record.name.startswith("app") or record.levelno >= logging.WARNING:
            scanned += 1
            text = record.getMessage() + repr(record.__dict__)
            _scan(f"log record {record.name}:{record.levelname}", text, needles)
    return scanned


# -- scenario 1: plangate run ---------------------------------------------------------------------


class _EchoSecretHandler(BaseHTTPRequestHandler):
    """Answers 500 with the request's headers in the body: a server that leaks what it got."""

    def do_GET(self) -> None:
        body = json.dumps({"error": "denied", "you_sent": dict(self.headers)}).encode()
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Echo-Authorization", self.headers.get("Authorization", ""))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def echo_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoSecretHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


SHELL_PLAN = """apiVersion: plangate.dev/v1
kind: Plan
id: leaky-shell
title: steps that try to print their secrets
team: platform
environment: local
resources: [local/secrets]
steps:
  - id: show
    action: shell
    with:
      run: [sh, -c, 'echo "token=$TOKEN"; echo "key=$KEY" >&2']
      secret_env: {TOKEN: DEPLOY_TOKEN, KEY: DEPLOY_KEY}
    compensate: {none: prints only}
  - id: fail
    action: shell
    needs: [show]
    with:
      run: [sh, -c, 'echo "stderr $TOKEN $KEY" >&2; echo "$TOKEN"; exit 3']
      secret_env: {TOKEN: DEPLOY_TOKEN, KEY: DEPLOY_KEY}
    retry: {max_attempts: 2}
    compensate: {none: prints only}
"""

HTTP_PLAN = """apiVersion: plangate.dev/v1
kind: Plan
id: leaky-http
title: an http step whose server echoes the secret header
team: platform
environment: local
resources: [local/secrets]
steps:
  - id: call
    action: http
    with:
      url: {url}/deploy
      secret_headers: {{Authorization: DEPLOY_TOKEN, X-Key: API_KEY}}
    retry: {{max_attempts: 2}}
    compensate: {{none: the server refuses anyway}}
"""


@pytest.fixture
def world(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "plans").mkdir()
    shutil.copytree(ROOT / "policies", repo / "policies")
    safety = repo / "policies" / "safety.yaml"  # this test's base policy allows its echo server
    safety.write_text(
        safety.read_text().replace('"*.internal.example"]', '"*.internal.example", "127.0.0.1"]')
    )
    monkeypatch.chdir(repo)
    monkeypatch.setenv("USER", "carol")
    monkeypatch.delenv("PLANGATE_DATA_DIR", raising=False)
    planted = {
        "DEPLOY_TOKEN": _token(),
        "DEPLOY_KEY": _pem(),
        "API_KEY": "sk-" + pysecrets.token_hex(20),
        # present in the environment but never named by a plan: must not show up either
        "GITHUB_PRIVATE_KEY": _pem(),
        "GITHUB_WEBHOOK_SECRET": "whsec-" + pysecrets.token_hex(16),
        "GITHUB_TOKEN": _token(),
    }
    for name, value in planted.items():
        monkeypatch.setenv(name, value)
    return repo, planted


def _run(repo: Path, plan: str, capsys) -> tuple[int, str, str]:
    """Attest (alice approves carol's plan), then run; the attest output is returned in err."""
    args = ["--data-dir", str(repo.parent / "data"), "--audit-repo", str(repo.parent / "audit.git")]
    assert main(["attest", plan, "--approver", "alice"]) == 0, capsys.readouterr().err
    attested = "".join(capsys.readouterr())
    code = main(["run", plan, "--format", "json", *args])
    out, err = capsys.readouterr()
    return code, out, attested + err


def test_secrets_never_leak_from_a_local_run(world, echo_server, capsys, caplog):
    repo, planted = world
    caplog.set_level(logging.DEBUG)
    (repo / "plans" / "shell.yaml").write_text(SHELL_PLAN)
    (repo / "plans" / "http.yaml").write_text(HTTP_PLAN.format(url=echo_server))
    assert main(["keygen"]) == 0
    signing_key = (repo / ".plangate" / "keys" / "approval.pem").read_text()
    needles = _needles(*planted.values(), signing_key)
    outputs: list[tuple[str, str]] = [("keygen output", "".join(capsys.readouterr()))]

    code, out, err = _run(repo, "plans/shell.yaml", capsys)
    assert out.startswith("{"), (code, out, err)
    result = json.loads(out)
    assert code == 3 and result["status"] in ("compensated", "aborted"), result
    failed = next(s for s in result["steps"] if s["step"] == "fail")
    assert failed["status"] == "failed" and "***" in failed["error"], "redacted, not dropped"
    outputs += [("shell run stdout (result JSON)", out), ("shell run stderr", err)]

    code, out, err = _run(repo, "plans/http.yaml", capsys)
    assert out.startswith("{"), (code, out, err)
    result = json.loads(out)
    assert code == 3, result
    (call,) = result["steps"]
    assert call["status"] == "failed" and "500" in call["error"], call
    outputs += [("http run stdout (result JSON)", out), ("http run stderr", err)]

    audit = str(repo.parent / "audit.git")
    assert main(["audit", "list", "--repo", audit, "--format", "json"]) == 0
    outputs.append(("audit list", "".join(capsys.readouterr())))

    for where, text in outputs:
        _scan(where, text, needles)
    _scan_logs(caplog.records, needles)

    data = repo.parent / "data"
    assert _scan_tree(data, needles) >= 2, "state DB and event log were scanned"
    assert list(data.glob("*.jsonl")), "the event log exists and was scanned"
    assert _scan_git(repo.parent / "audit.git", needles) > 0, "audit events were scanned"
    keys = repo / ".plangate" / "keys"
    assert _scan_tree(repo / ".plangate", needles, skip=(keys,)) >= 2, "attestations scanned"


def test_the_secret_really_reached_the_step(world, echo_server, capsys):
    """Guard against a vacuous pass: the step got the value (it wrote it where we can see)."""
    repo, planted = world
    token = planted["DEPLOY_TOKEN"]
    (repo / "plans" / "proof.yaml").write_text(
        SHELL_PLAN.replace('echo "token=$TOKEN"', 'printf %s "$TOKEN" > proof.txt')
        .replace("id: leaky-shell", "id: proof")
        .replace("exit 3", "exit 0")
    )
    main(["keygen"])
    code, out, _err = _run(repo, "plans/proof.yaml", capsys)
    assert code == 0, out
    assert (repo / "proof.txt").read_text() == token
    assert token not in out


# -- scenario 2: the webhook server ---------------------------------------------------------------


def test_server_secrets_never_in_check_runs_logs_or_inbox(settings, fake, private_key, caplog):
    caplog.set_level(logging.DEBUG)
    needles = _needles(private_key, SECRET, "ghs_fake")
    deps = make_deps(
        settings,
        evaluator=PolicyEngineEvaluator(),
        worker_policy=WorkerPolicy(initial_delay=0, max_delay=0, max_attempts=2),
    )
    client = TestClient(create_app(settings, deps))
    answers = []
    # one delivery processed normally (four check runs), one dead-lettered by a GitHub outage
    answers.append(post(client, "pull_request", webhook_fixture("pull_request.opened")))
    deps.worker.drain()
    assert set(fake.runs_for(HEAD)) == {
        "plangate/validate",
        "plangate/policy",
        "plangate/cost",
        "plangate/approval",
    }
    fake.fail("POST", r"/check-runs$", status=401, times=100, message="Bad credentials")
    answers.append(post(client, "pull_request", webhook_fixture("pull_request.synchronize")))
    deps.worker.drain()
    answers.append(client.get("/healthz"))
    answers.append(client.get("/metrics"))
    answers.append(post(client, "pull_request", b"{}", signature="sha256=" + "0" * 64))

    assert fake.token_count >= 1, "an installation token was minted and used"
    counts = deps.inbox.counts()
    assert counts.get("done") == 1 and sum(counts.values()) == 2, counts
    (failed,) = [d for d in deps.inbox.list() if d.status != "done"]
    assert failed.last_error, "the outage's error was recorded (and is scanned below)"
    for call in fake.calls:
        _scan(f"request body {call.method} {call.path}", json.dumps(call.body), needles)
    for run in fake.check_runs.values():
        _scan(f"check run {run['name']}", json.dumps(run), needles)
    for r in answers:
        _scan(f"HTTP answer {r.request.url.path}", r.text, needles)
    _scan_logs(caplog.records, needles)
    assert _scan_tree(settings.data_dir, needles) >= 1, "the inbox database was scanned"


# -- scenario 3: plangate execute (the Actions executor) -------------------------------------------


def _execute_world_module():
    """tests/execute/test_execute_github.py's World and fake GitHub, loaded by path."""
    import importlib.util
    import sys

    name = "execute_github_world"
    if name not in sys.modules:
        path = ROOT / "tests" / "execute" / "test_execute_github.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_xg = _execute_world_module()
world_gh = pytest.fixture(_xg.world.__wrapped__, name="world_gh")


def test_secrets_never_leak_from_plangate_execute(world_gh, monkeypatch, capsys, caplog):
    """GITHUB_TOKEN and a step secret, printed by a failing step: not in check runs, PR
    comments, output, logs, the audit ref or the data dir."""
    caplog.set_level(logging.DEBUG)
    step_secret = _token()
    monkeypatch.setenv("DEPLOY_TOKEN", step_secret)
    plan = (
        (ROOT / "plans" / "local-hello.yaml")
        .read_text()
        .replace(
            "run: [echo, hello from plangate]",
            'run: [sh, -c, \'echo "$T"; echo "token $T" >&2; exit 3\']\n'
            "      secret_env: {T: DEPLOY_TOKEN}\n    retry: {max_attempts: 1}",
        )
    )
    world_gh.build(plan_text=plan)
    world_gh.attest()
    assert _xg.execute(world_gh) == 3
    gh = world_gh.gh
    assert gh.conclusion() == "failure"
    assert "***" in gh.summary(), "the failure is shown, redacted"
    needles = _needles(step_secret, _xg.TOKEN)
    _scan("stdout/stderr", "".join(capsys.readouterr()), needles)
    _scan("check runs", json.dumps(gh.check_runs), needles)
    _scan("PR comments", json.dumps(gh.comments), needles)
    _scan_logs(caplog.records, needles)
    assert _scan_git(world_gh.root, needles) > 0
    assert _scan_tree(world_gh.root.parent / "data", needles) >= 1
