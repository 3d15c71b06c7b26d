"""``plangate execute``: the Actions executor end to end against a fake GitHub, no network.

A real git repository in ``tmp_path`` (base commit, PR head on a branch, squash-merge commit on
main), the shipped policies with a test signing key added to ``signers``, local-key (DSSE)
attestations, and GitHub answered through ``responses`` with the shapes of ``@octokit/openapi``
(``tests/fixtures/github/openapi-execute-subset.json``). Every request body Plangate sends is
validated against that operation's request schema.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import shutil
import subprocess
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import jsonschema
import pytest
import responses
from cryptography.hazmat.primitives import serialization

from app.approvals.attest import (
    INTOTO_PAYLOAD_TYPE,
    Approver,
    BaseRef,
    PullRequestRef,
    RepositoryRef,
    build_statement,
    storage_path,
)
from app.audit.git_store import GitAuditStore
from app.cli import main
from app.plan.loader import load_plan_bytes
from app.policy.loader import load_policy_dir
from app.signing.local_key import LocalKeySigner, generate_private_key
from tests.execute.gitrefs_fake import GitRefsFake

ROOT = Path(__file__).resolve().parents[2]
OPENAPI = json.loads((ROOT / "tests/fixtures/github/openapi-execute-subset.json").read_text())[
    "operations"
]
REPO = "acme/ops"
PLAN = "plans/local-hello.yaml"
PR = 7
API = "https://api.github.com"
BRANCH = "plangate-attestations"
TOKEN = "ghs_secretTOKENvalue123"


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


class FakeGitHub:
    """Just the endpoints ``plangate execute`` uses, answering with @octokit/openapi shapes."""

    def __init__(self, merge_sha: str, head_sha: str) -> None:
        self.files: dict[tuple[str, str], bytes] = {}
        self.pulls = [self._pull(PR, merge_sha, head_sha)]
        self.requests: list[tuple[str, str, Any]] = []
        self.schema_errors: list[str] = []
        self.check_runs: dict[int, dict[str, Any]] = {}
        self.comments: list[tuple[int, str]] = []
        self.issues: list[dict[str, Any]] = []
        self.pulls_status = 200
        #: git data: lock refs (refs/plangate/locks/*) and the attestation branch's commits
        self.git = GitRefsFake(OPENAPI, self._validate)

    @staticmethod
    def _pull(number: int, merge_sha: str, head_sha: str) -> dict[str, Any]:
        pr = copy.deepcopy(
            OPENAPI["repos/list-pull-requests-associated-with-commit"]["examples"]["200"][0]
        )
        pr.update(number=number, merge_commit_sha=merge_sha, state="closed")
        pr["merged_at"] = "2026-11-25T10:00:00Z"
        pr["head"]["sha"] = head_sha
        pr["user"]["login"] = "octocat"
        pr["html_url"] = f"https://github.com/{REPO}/pull/{number}"
        return pr

    def _validate(self, operation: str, body: Any) -> None:
        schema = OPENAPI[operation]["request_schema"]
        for error in jsonschema.Draft4Validator(schema).iter_errors(body):
            self.schema_errors.append(f"{operation}: {error.json_path}: {error.message}")

    def install(self, rsps: responses.RequestsMock) -> None:
        rx = re.compile(r"https://api\.github\.com(:443)?/.*")
        for method in ("GET", "POST", "PATCH", "DELETE"):
            rsps.add_callback(method, rx, callback=self._callback)

    def _callback(self, request: Any) -> tuple[int, dict[str, str], str]:
        parts = urlsplit(request.url)
        path = unquote(parts.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        body = json.loads(request.body) if request.body else None
        self.requests.append((request.method, path, body))
        assert request.headers.get("Authorization") == f"token {TOKEN}"
        status, payload = self._route(request.method, path, query, body)
        return status, {"Content-Type": "application/json"}, json.dumps(payload)

    def _route(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        base = f"/repos/{REPO}"
        if method == "GET" and re.fullmatch(base + r"/commits/[0-9a-f]{40}/pulls", path):
            sha = path.split("/")[-2]
            if self.pulls_status != 200:
                return self.pulls_status, {"message": "Not Found"}
            return 200, [p for p in self.pulls if sha in (p["merge_commit_sha"], p["head"]["sha"])]
        if path.startswith(base + "/git/"):
            answer = self.git.route(method, path.removeprefix(base), body)
            if answer is not None:
                return answer
        m = re.fullmatch(base + r"/contents/(.+)", path)
        if method == "GET" and m:
            content = self.files.get((m.group(1), query.get("ref", "")))
            if content is None:  # written through the git data API (the attestation store)
                content = self.git.file_at(m.group(1), query.get("ref", ""))
            if content is None:
                return 404, {"message": "Not Found"}
            doc = copy.deepcopy(OPENAPI["repos/get-content"]["examples"]["200"])
            doc.update(
                path=m.group(1),
                name=m.group(1).rsplit("/", 1)[-1],
                size=len(content),
                content=base64.b64encode(content).decode(),
                encoding="base64",
            )
            return 200, doc
        if method == "POST" and path == base + "/check-runs":
            self._validate("checks/create", body)
            run_id = len(self.check_runs) + 1
            self.check_runs[run_id] = {"created": body, "updates": []}
            return 201, {"id": run_id, "name": body["name"], "head_sha": body["head_sha"]}
        m = re.fullmatch(base + r"/check-runs/(\d+)", path)
        if method == "PATCH" and m:
            self._validate("checks/update", body)
            self.check_runs[int(m.group(1))]["updates"].append(body)
            return 200, {"id": int(m.group(1))}
        m = re.fullmatch(base + r"/issues/(\d+)/comments", path)
        if method == "POST" and m:
            self._validate("issues/create-comment", body)
            self.comments.append((int(m.group(1)), body["body"]))
            return 201, OPENAPI["issues/create-comment"]["examples"]["201"]
        if method == "POST" and path == base + "/issues":
            self._validate("issues/create", body)
            self.issues.append(body)
            return 201, OPENAPI["issues/create"]["examples"]["201"]
        return 404, {"message": f"no route for {method} {path}"}

    def final(self) -> dict[str, Any]:
        """The update that completed the check run (live progress updates come before it)."""
        (run,) = self.check_runs.values()
        (final,) = [u for u in run["updates"] if u.get("status") == "completed"]
        return final

    def conclusion(self) -> str:
        return self.final()["conclusion"]

    def summary(self) -> str:
        return self.final()["output"]["summary"]


class World:
    """The checkout, the signing key and the fake GitHub of one test."""

    def __init__(self, root: Path, key_pem: str, signer: LocalKeySigner) -> None:
        self.root = root
        self.signer = signer
        self.key_pem = key_pem
        self.base = self.head = self.after = ""
        self.gh: FakeGitHub | None = None

    def build(self, *, plan_text: str | None = None) -> None:
        """base (policies) -> PR head on a branch (adds the plan) -> squash merge on main."""
        r = self.root
        _git(r, "init", "-q", "-b", "main")
        shutil.copytree(ROOT / "policies", r / "policies")
        teams = r / "policies" / "teams.yaml"
        indented = "".join(f"      {line}\n" for line in self.key_pem.strip().splitlines())
        teams.write_text(
            teams.read_text().replace(
                "signers:\n",
                "signers:\n  - name: test-approvals\n    type: key\n    public_key: |\n" + indented,
                1,
            )
        )
        (r / ".gitignore").write_text(".plangate/\ndata/\n")
        _git(r, "add", "-A")
        _git(r, "commit", "-q", "-m", "base")
        self.base = _git(r, "rev-parse", "HEAD")
        _git(r, "checkout", "-q", "-b", "pr")
        (r / "plans").mkdir()
        (r / PLAN).write_text(plan_text or (ROOT / PLAN).read_text())
        _git(r, "add", "-A")
        _git(r, "commit", "-q", "-m", "add plan")
        self.head = _git(r, "rev-parse", "HEAD")
        _git(r, "checkout", "-q", "main")
        _git(r, "merge", "-q", "--squash", "pr")
        _git(r, "commit", "-q", "-m", f"add plan (#{PR})")
        self.after = _git(r, "rev-parse", "HEAD")
        self.gh = FakeGitHub(self.after, self.head)
        (r / ".plangate").mkdir()  # the example plan writes its marker there

    def plan_digest(self) -> str:
        return load_plan_bytes(PLAN, (self.root / PLAN).read_bytes()).digest

    def attest(
        self,
        *,
        pr: int = PR,
        head: str | None = None,
        digest: str | None = None,
        policy_digest: str | None = None,
        approvers: tuple[str, ...] = ("alice",),
        store_pr: int = PR,
        store_head: str | None = None,
        signer: LocalKeySigner | None = None,
        repo_id: int | None = None,
    ) -> None:
        head = head or self.head
        now = datetime.now(UTC) - timedelta(minutes=1)
        statement = build_statement(
            plans=[(PLAN, digest or self.plan_digest(), None)],
            repository=RepositoryRef(name=REPO, id=repo_id),
            approvers=[
                Approver(
                    login=a,
                    approvedAt=now,
                    requirement="local-single-approval",
                    reviewId=100 + i,
                    commit=head,
                )
                for i, a in enumerate(approvers)
            ],
            policy_digest=policy_digest or load_policy_dir(self.root / "policies").digest,
            evaluated_at=now,
            ttl=timedelta(days=1),
            pull_request=PullRequestRef(number=pr, url=f"https://github.com/{REPO}/pull/{pr}"),
            base=BaseRef(ref="refs/heads/main", sha=self.base),
            head_sha=head,
        )
        document = (signer or self.signer).sign(INTOTO_PAYLOAD_TYPE, statement.payload())
        assert self.gh is not None
        self.gh.files[(storage_path(store_pr, store_head or self.head, "dsse"), BRANCH)] = document

    def marker(self) -> Path:
        return self.root / ".plangate" / "hello.txt"


@pytest.fixture
def world(tmp_path, monkeypatch) -> World:
    key = generate_private_key()
    pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    root = tmp_path / "checkout"
    root.mkdir()
    monkeypatch.chdir(root)
    for name in ("GITHUB_EVENT_PATH", "GITHUB_RUN_ID", "PLANGATE_DATA_DIR", "GITHUB_API_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    monkeypatch.setenv("GITHUB_REPOSITORY", REPO)
    monkeypatch.setenv("GITHUB_SERVER_URL", "https://github.com")
    return World(root, pem, LocalKeySigner(key))


def execute(world: World, *extra: str, before: str | None = None) -> int:
    assert world.gh is not None
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        world.gh.install(rsps)
        code = main(
            [
                "execute",
                "--before",
                before or world.base,
                "--after",
                world.after,
                "--data-dir",
                str(world.root.parent / "data"),
                "--no-push-audit",
                *extra,
            ]
        )
    assert world.gh.schema_errors == []
    return code


# --- the happy path ---------------------------------------------------------------------------


def test_approved_merge_runs_reports_and_audits(world, capsys):
    world.build()
    world.attest()
    assert execute(world) == 0
    assert world.marker().read_text() == "hello"
    gh = world.gh
    (run,) = gh.check_runs.values()
    assert run["created"]["status"] == "in_progress"
    assert run["created"]["head_sha"] == world.after
    assert gh.conclusion() == "success"
    assert gh.final()["output"]["title"] == f"{PLAN} succeeded"
    progress = [u for u in run["updates"] if u.get("status") == "in_progress"]
    assert progress, "the check run shows live progress while the plan runs"
    assert "| `greet` |" in progress[-1]["output"]["summary"]
    assert run["updates"][-1]["status"] == "completed"
    summary = gh.summary()
    assert "| `write-marker` | succeeded | 1 |" in summary
    assert "approved by alice" in summary and "Run id" in summary
    ((number, comment),) = gh.comments
    assert number == PR and "succeeded" in comment
    store = GitAuditStore(world.root)
    kinds = [e.type for e in store.events()]
    store.close()
    assert "run.started" in kinds and "run.finished" in kinds
    assert "succeeded" in capsys.readouterr().out
    # the workflow uploads the data dir: it carries the run's Prometheus metrics
    metrics = (world.root.parent / "data" / "metrics.prom").read_text()
    assert "plangate_step_outcomes_total" in metrics or "plangate_runs_total" in metrics


# --- refusals (security invariants) -----------------------------------------------------------


def _refused(world: World, check: str, *, commented: bool = True) -> str:
    assert execute(world) == 1
    assert not world.marker().exists(), "nothing may mutate without a verified approval"
    assert world.gh.conclusion() == "failure"
    summary = world.gh.summary()
    assert f"({check} check)" in summary
    if commented:
        assert [n for n, _ in world.gh.comments] == [PR]
        assert f"({check} check)" in world.gh.comments[0][1]
    else:
        assert world.gh.comments == []
    return summary


def test_mutation_refused_without_attestation_in_actions(world):
    world.build()
    summary = _refused(world, "format")
    assert "no approval attestation for PR #7" in summary


def test_attestation_for_other_pr_refused(world):
    world.build()
    world.attest(pr=8)  # stored where PR #7's would be, but it approves PR #8
    assert "merged pull request is #7" in _refused(world, "pull_request")


def test_attestation_for_other_head_refused(world):
    world.build()
    other = "1" * 40
    world.attest(head=other, store_head=world.head)
    assert "was merged" in _refused(world, "head_sha")


def test_plan_changed_after_approval_refused(world):
    world.build()
    changed = (ROOT / PLAN).read_text().replace("hello from plangate", "goodbye")
    world.attest(digest=load_plan_bytes(PLAN, changed.encode()).digest)
    assert "the plan changed after it was approved" in _refused(world, "digest")


def test_policy_tightened_after_approval_refused(world):
    world.build()
    world.attest()  # approved under the base policy: one approval for local plans
    approvals = world.root / "policies" / "approvals.yaml"
    approvals.write_text(
        approvals.read_text().replace(
            "when: {environment: local}\n    require: {count: 1}",
            "when: {environment: local}\n    require: {count: 2}",
        )
    )
    assert "count: 2" in approvals.read_text()
    assert "does not accept the recorded approvals" in _refused(world, "policy")


def test_policy_changed_but_still_satisfied_runs(world):
    world.build()
    world.attest()
    approvals = world.root / "policies" / "approvals.yaml"
    approvals.write_text(approvals.read_text() + "\n# an unrelated edit\n")
    risk = world.root / "policies" / "risk.yaml"
    risk.write_text(risk.read_text().replace("\n", "\n", 1) + "# another edit\n")
    assert execute(world) == 0
    assert world.marker().exists()


def test_untrusted_signer_refused(world):
    world.build()
    world.attest(signer=LocalKeySigner(generate_private_key()))
    _refused(world, "signer")


def test_direct_push_without_merged_pull_request_refused(world):
    world.build()
    world.attest()
    world.gh.pulls = []
    assert "not the merge commit of a merged pull request" in _refused(
        world, "pull_request", commented=False
    )


def test_empty_trust_refused(world):
    world.build()
    world.attest()
    teams = world.root / "policies" / "teams.yaml"
    text = teams.read_text()
    teams.write_text(text[: text.index("signers:")] + "signers: []\n" + _after_signers(text))
    _refused(world, "signer")


def _after_signers(text: str) -> str:
    """The rest of teams.yaml after its ``signers:`` block (top-level keys that follow)."""
    lines = text[text.index("signers:") :].splitlines(keepends=True)[1:]
    rest = [i for i, line in enumerate(lines) if line[:1] not in (" ", "\n", "")]
    return "".join(lines[rest[0] :]) if rest else ""


def test_broken_policy_is_invalid_input(world, capsys):
    world.build()
    world.attest()
    (world.root / "policies" / "approvals.yaml").write_text("approvals: [\n")
    assert execute(world) == 2
    assert not world.marker().exists()
    assert world.gh.check_runs == {}


# --- what changed -----------------------------------------------------------------------------


def test_no_changed_plan_exits_zero_without_calling_github(world, capsys):
    world.build()
    assert execute(world, before=world.after) == 0
    assert world.gh.requests == []
    assert "no plan added or changed" in capsys.readouterr().out


def test_new_branch_zero_before_diffs_against_parent(world):
    world.build()
    world.attest()
    assert execute(world, before="0" * 40) == 0
    assert world.marker().exists()


def test_deleted_plan_is_reported_not_run(world, capsys):
    world.build()
    r = world.root
    _git(r, "rm", "-q", PLAN)
    _git(r, "commit", "-q", "-m", "remove plan")
    world.base, world.after = world.after, _git(r, "rev-parse", "HEAD")
    assert execute(world) == 0
    assert "deleted (not run)" in capsys.readouterr().out
    assert world.gh.requests == []


def test_dry_run_verifies_and_writes_nothing(world, capsys):
    world.build()
    world.attest()
    assert execute(world, "--dry-run") == 0
    assert not world.marker().exists()
    assert all(method == "GET" for method, _, _ in world.gh.requests)
    assert "dry_run" in capsys.readouterr().out


def test_failed_step_exits_three_with_failure_conclusion(world):
    plan = (
        (ROOT / PLAN)
        .read_text()
        .replace(
            "run: [echo, hello from plangate]",
            "run: [python3, -c, 'raise SystemExit(3)']\n    retry: {max_attempts: 1}",
        )
    )
    world.build(plan_text=plan)
    world.attest()
    assert execute(world) == 3
    assert world.gh.conclusion() == "failure"
    assert "| `greet` | failed |" in world.gh.summary()


# --- audit push -------------------------------------------------------------------------------


def test_audit_push_uses_token_in_memory_only(world, tmp_path, monkeypatch):
    world.build()
    world.attest()
    remote_root = tmp_path / "remote"
    bare = remote_root / REPO
    bare.parent.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "--bare", f"{bare}.git"], check=True)
    monkeypatch.setenv("GITHUB_SERVER_URL", f"file://{remote_root}")
    assert world.gh is not None
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        world.gh.install(rsps)
        code = main(
            [
                "execute",
                "--before",
                world.base,
                "--after",
                world.after,
                "--data-dir",
                str(tmp_path / "data"),
                "--push-audit",
            ]
        )
    assert code == 0
    pushed = _git(Path(f"{bare}.git"), "rev-parse", "refs/heads/plangate/audit")
    local = _git(world.root, "rev-parse", "refs/heads/plangate/audit")
    assert pushed == local
    assert "Audit trail pushed" in world.gh.summary()
    config = (world.root / ".git" / "config").read_text()
    assert TOKEN not in config and "plangate-audit-push" not in config
    encoded = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    assert encoded not in config


# --- GitHub trouble and canary incidents ------------------------------------------------------


def test_github_error_mid_run_fails_the_check_run(world, capsys):
    world.build()
    world.attest()
    world.gh.pulls_status = 404  # the pulls lookup fails: the executor stops
    assert execute(world) == 3
    assert not world.marker().exists()
    assert world.gh.conclusion() == "failure"
    assert world.gh.final()["output"]["title"].startswith("Execution stopped: GitHubError")


@pytest.fixture
def metrics_server():
    """A local metrics endpoint for the canary probe: reports an error rate of 0.5."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"data": {"value": 0.5}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    server.shutdown()
    server.server_close()


def test_canary_abort_opens_an_incident_issue(world, metrics_server):
    plan = (ROOT / PLAN).read_text()
    plan = plan.replace(
        "resources: [local/scratch]\n",
        "resources: [local/scratch]\ncanary:\n  steps: [write-marker]\n  analysis: [probe]\n",
    )
    plan += (
        "\n  - id: probe\n    action: probe\n    needs: [write-marker]\n    with:\n"
        f"      http: {{url: '{metrics_server}', json_path: data.value}}\n"
        "      samples: 1\n      interval: 0\n      thresholds: {max_value: 0.1}\n"
    )
    plan = plan.replace(
        "needs: [write-marker]\n    with:\n      message",
        "needs: [probe]\n    with:\n      message",
    )
    world.build(plan_text=plan)
    world.attest()
    assert execute(world) == 3
    assert not world.marker().exists(), "the canary's change was compensated"
    (issue,) = world.gh.issues
    assert "local-hello" in issue["title"] and "incident" in issue["labels"]
    summary = world.gh.summary()
    assert "Canary: aborted" in summary and "Incident:" in summary
    assert "| `write-marker` | succeeded |" in summary


# --- inputs from the Actions environment ------------------------------------------------------


def test_push_event_payload_gives_the_commit_range(world, tmp_path, monkeypatch, capsys):
    """GITHUB_EVENT_PATH as Actions writes it (GitHub's push payload, our recorded fixture)."""
    world.build()
    world.attest()
    event = json.loads(
        (ROOT / "tests/fixtures/github/webhooks/push.default_branch.json").read_text()
    )
    event.update(before=world.base, after=world.after)
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event))
    monkeypatch.setenv("GITHUB_EVENT_PATH", str(path))
    monkeypatch.setenv("GITHUB_RUN_ID", "4242")
    monkeypatch.setenv("PLANGATE_DATA_DIR", str(tmp_path / "data"))
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        world.gh.install(rsps)
        assert main(["execute", "--no-push-audit", "--format", "json"]) == 0
    assert world.gh.schema_errors == []
    doc = json.loads(capsys.readouterr().out)
    assert doc["plans"][0]["status"] == "succeeded" and doc["plans"][0]["pull_request"] == PR
    run_url = f"https://github.com/{REPO}/actions/runs/4242"
    assert world.gh.final()["details_url"] == run_url
    assert run_url in world.gh.comments[0][1]


def test_missing_repository_or_range_is_invalid_input(world, monkeypatch, capsys):
    world.build()
    monkeypatch.delenv("GITHUB_REPOSITORY")
    assert main(["execute", "--before", world.base, "--after", world.after]) == 2
    assert "GITHUB_REPOSITORY" in capsys.readouterr().err
    assert main(["execute", "--repo", REPO]) == 2
    assert "no commit range" in capsys.readouterr().err


def test_token_never_in_output_or_anything_sent_to_github(world, capsys):
    world.build()
    world.attest()
    assert execute(world) == 0
    out = capsys.readouterr()
    assert TOKEN not in out.out and TOKEN not in out.err
    sent = json.dumps([body for _, _, body in world.gh.requests])
    assert TOKEN not in sent
    events = (world.root.parent / "data" / "events.jsonl").read_text()
    assert TOKEN not in events


def _event(world: World, tmp_path: Path, monkeypatch, repo_id: int) -> None:
    event = json.loads(
        (ROOT / "tests/fixtures/github/webhooks/push.default_branch.json").read_text()
    )
    event.update(before=world.base, after=world.after)
    event["repository"].update(id=repo_id, full_name=REPO)
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event))
    monkeypatch.setenv("GITHUB_EVENT_PATH", str(path))


def test_attestation_from_a_recreated_repository_refused(world, tmp_path, monkeypatch):
    """Same owner/name, different repository id (deleted and re-created): not the same repo."""
    world.build()
    world.attest(repo_id=1111)
    _event(world, tmp_path, monkeypatch, repo_id=2222)
    assert "approval was given in repository" in _refused(world, "repository")


def test_attestation_with_matching_repository_id_runs(world, tmp_path, monkeypatch):
    world.build()
    world.attest(repo_id=1111)
    _event(world, tmp_path, monkeypatch, repo_id=1111)
    assert execute(world) == 0


def test_checkout_not_at_the_pushed_commit_is_invalid_input(world, capsys):
    world.build()
    world.attest()
    _git(world.root, "checkout", "-q", world.base)
    assert execute(world) == 2
    assert "not at the pushed commit" in capsys.readouterr().err
    assert world.gh.requests == []


def test_invalid_plan_in_merge_commit_is_exit_two_and_fails_the_check(world):
    world.build(plan_text="apiVersion: plangate.dev/v1\nkind: Plan\nid: broken\n")
    assert execute(world) == 2
    assert world.gh.conclusion() == "failure"
    final = world.gh.final()
    assert final["output"]["title"] == f"{PLAN} is not a valid plan"
    assert final["output"]["annotations"][0]["path"] == PLAN
