"""From a signed delivery to check runs on GitHub (fake GitHub behind ``responses``)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from ghfake import Pull
from pydantic import SecretStr
from srvkit import BASE, HEAD, PLAN, POLICY, REPO, create_app, make_deps, post, webhook_fixture

from app.github.client import HttpRetry
from app.server.evaluate import Evaluation, EvaluationRequest, NotConfiguredEvaluator
from app.server.worker import WorkerPolicy

NAMES = {"plangate/validate", "plangate/policy", "plangate/cost", "plangate/approval"}


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request, settings, monkeypatch):
    """Every processing test (retries, dead letters, restarts, coalescing) on both inbox
    backends: SQLite under the data dir, and PostgreSQL (``PLANGATE_DATABASE_URL``)."""
    if request.param == "sqlite":
        yield settings
        return
    import app.server.app as server_app
    from app.server.inbox import open_inbox

    opened = []

    def tracked(*args, **kw):
        opened.append(open_inbox(*args, **kw))
        return opened[-1]

    monkeypatch.setattr(server_app, "open_inbox", tracked)
    url = request.getfixturevalue("pg_url")
    yield settings.model_copy(update={"database_url": SecretStr(url)})
    for inbox in opened:
        inbox.close()
    # the inbox-depth gauge still points at the last app's inbox: not at a closed one
    from app.observability import metrics

    metrics.INBOX_DEPTH.set_function(lambda: 0)


def _setup(settings, **kw):
    deps = make_deps(settings, **kw)
    return TestClient(create_app(settings, deps)), deps


class RecordingEvaluator(NotConfiguredEvaluator):
    def __init__(self) -> None:
        self.requests: list[EvaluationRequest] = []

    def evaluate(self, request: EvaluationRequest) -> Evaluation:
        self.requests.append(request)
        return super().evaluate(request)


def test_opened_pr_gets_four_check_runs(settings, fake):
    client, deps = _setup(settings)
    assert post(client, "pull_request", webhook_fixture("pull_request.opened")).status_code == 202
    assert deps.worker.drain() == 1
    runs = fake.runs_for(HEAD)
    assert set(runs) == NAMES
    assert runs["plangate/validate"]["conclusion"] == "success"
    assert "local-hello" in runs["plangate/validate"]["output"]["summary"]
    assert "sha256:" in runs["plangate/validate"]["output"]["summary"]
    assert fake.schema_errors == []
    assert deps.inbox.counts() == {"done": 1}


def test_policy_engine_missing_fails_checks(settings, fake):
    """Fail closed: without an evaluator, policy/cost/approval fail, never pass."""
    client, deps = _setup(settings)
    post(client, "pull_request", webhook_fixture("pull_request.opened"))
    deps.worker.drain()
    runs = fake.runs_for(HEAD)
    for name in ("plangate/policy", "plangate/cost", "plangate/approval"):
        assert runs[name]["conclusion"] == "failure"
        assert "not configured" in runs[name]["output"]["title"]


def test_evaluator_crash_fails_checks(settings, fake):
    class Broken:
        def evaluate(self, request):
            raise RuntimeError("bug")

    client, deps = _setup(settings, evaluator=Broken())
    post(client, "pull_request", webhook_fixture("pull_request.opened"))
    deps.worker.drain()
    runs = fake.runs_for(HEAD)
    assert runs["plangate/policy"]["conclusion"] == "failure"
    assert "internal error" in runs["plangate/policy"]["output"]["summary"]
    assert deps.inbox.counts() == {"done": 1}


def test_policy_read_from_base_branch(settings, fake):
    """The PR changes policies/; the evaluator still gets the base commit's policy files."""
    repo = fake.repo(REPO)
    evil = b"allow: everything\n"
    repo.commit(
        {"README.md": "hi\n", "policies/teams.yaml": evil, "plans/hello.yaml": PLAN}, sha=HEAD
    )
    evaluator = RecordingEvaluator()
    client, deps = _setup(settings, evaluator=evaluator)
    post(client, "pull_request", webhook_fixture("pull_request.opened"))
    deps.worker.drain()
    (request,) = evaluator.requests
    assert request.policy_files == {"policies/teams.yaml": POLICY}
    assert request.pull.base_sha == BASE


def test_review_on_old_head_sha_not_given_to_gate(settings, fake):
    fake.repo(REPO).pulls[2].reviews = [
        {"id": 1, "user": {"login": "old"}, "state": "APPROVED", "commit_id": "0" * 40},
        {"id": 2, "user": {"login": "new"}, "state": "APPROVED", "commit_id": HEAD},
    ]
    evaluator = RecordingEvaluator()
    client, deps = _setup(settings, evaluator=evaluator)
    post(client, "pull_request_review", webhook_fixture("pull_request_review.submitted"))
    deps.worker.drain()
    (request,) = evaluator.requests
    assert [r.user for r in request.reviews] == ["new"]
    assert set(fake.runs_for(HEAD)) == {"plangate/approval"}


def test_restart_after_ack_processes_exactly_once(settings, fake):
    """Acknowledged, process killed before processing: a new process handles it once."""
    client, _ = _setup(settings)
    assert post(client, "pull_request", webhook_fixture("pull_request.opened")).status_code == 202
    # the first process dies here: no worker ever ran. A new one starts on the same data dir.
    _, deps2 = _setup(settings)
    assert deps2.inbox.resume() == 0
    assert deps2.worker.drain() == 1
    assert deps2.worker.drain() == 0
    assert len(fake.calls_to("POST", r"/check-runs$")) == 4
    assert deps2.inbox.counts() == {"done": 1}


def test_restart_mid_processing_resumes(settings, fake):
    client, deps = _setup(settings)
    post(client, "pull_request", webhook_fixture("pull_request.opened"), delivery="mid")
    assert deps.inbox.claim(now=0) is not None  # claimed, then the process is killed
    _, deps2 = _setup(settings)
    assert deps2.inbox.resume() == 1
    assert deps2.worker.drain() == 1
    assert set(fake.runs_for(HEAD)) == NAMES


def test_duplicate_deliveries_one_set_of_check_runs(settings, fake):
    client, deps = _setup(settings)
    payload = webhook_fixture("pull_request.opened")
    post(client, "pull_request", payload, delivery="dup")
    post(client, "pull_request", payload, delivery="dup")
    deps.worker.drain()
    post(client, "pull_request", payload, delivery="dup")  # redelivered after processing
    deps.worker.drain()
    assert len(fake.check_runs) == 4


def test_retried_delivery_updates_its_check_runs(settings, fake):
    """A delivery that failed half-way is retried without creating a second set."""
    fake.fail("POST", r"/check-runs$", status=500, times=0)
    client, deps = _setup(
        settings, http_retry=HttpRetry(max_attempts=1, initial_delay=0, max_delay=0)
    )
    post(client, "pull_request", webhook_fixture("pull_request.opened"))
    # the third check-run creation fails once; the delivery is retried
    calls = {"n": 0}
    original = fake._route

    def flaky(method, path, query, headers, data):
        if method == "POST" and path.endswith("/check-runs"):
            calls["n"] += 1
            if calls["n"] == 3:
                return 502, {}, {"message": "bad gateway"}
        return original(method, path, query, headers, data)

    fake._route = flaky
    deps.worker.drain()
    assert len(fake.check_runs) == 4
    assert set(fake.runs_for(HEAD)) == NAMES
    assert len(fake.calls_to("PATCH", r"/check-runs/\d+$")) == 2  # the two created first
    assert deps.inbox.counts() == {"done": 1}


def test_github_500s_for_a_while_checks_complete_within_retries(settings, fake):
    fake.fail("POST", r"/check-runs$", status=500, times=2)
    fake.fail("GET", r"/pulls/2/files$", status=503, times=2)
    client, deps = _setup(settings)  # 3 attempts per call
    post(client, "pull_request", webhook_fixture("pull_request.opened"))
    deps.worker.drain()
    assert set(fake.runs_for(HEAD)) == NAMES
    assert len(fake.calls_to("POST", r"/check-runs$")) == 4 + 2
    assert len(fake.calls_to("GET", r"/pulls/2/files$")) == 1 + 2


def test_secondary_rate_limit_honoured(settings, fake):
    slept: list[float] = []
    fake.fail(
        "POST",
        r"/check-runs$",
        status=403,
        times=2,
        headers={"Retry-After": "3"},
        message="You have exceeded a secondary rate limit",
    )
    deps = make_deps(settings)
    deps_sleep = slept.append
    from app.server.app import Deps

    deps = Deps.from_settings(
        settings,
        http_retry=HttpRetry(max_attempts=3, initial_delay=0, max_delay=0),
        sleep=deps_sleep,
        start_worker=False,
    )
    client = TestClient(create_app(settings, deps))
    post(client, "pull_request", webhook_fixture("pull_request.opened"))
    deps.worker.drain()
    assert slept == [3.0, 3.0]
    assert set(fake.runs_for(HEAD)) == NAMES
    assert len(fake.calls_to("POST", r"/check-runs$")) == 6


def test_long_rate_limit_reschedules_delivery(settings, fake):
    fake.fail("GET", r"/pulls/2/files$", status=429, times=1, headers={"Retry-After": "120"})
    now = [1000.0]
    client, deps = _setup(settings, clock=lambda: now[0])
    post(client, "pull_request", webhook_fixture("pull_request.opened"), delivery="rl")
    deps.worker.drain()
    stored = deps.inbox.get("rl")
    assert stored.status == "queued" and stored.next_attempt_at == 1120.0
    assert len(fake.calls_to("GET", r"/pulls/2/files$")) == 1  # not hammered
    now[0] = 1121.0
    deps.worker.drain()
    assert deps.inbox.get("rl").status == "done"


def test_persistent_outage_dead_letters_after_max_attempts(settings, fake):
    fake.fail("GET", r"/pulls/2/files$", status=500, times=1000)
    client, deps = _setup(
        settings,
        http_retry=HttpRetry(max_attempts=2, initial_delay=0, max_delay=0),
        worker_policy=WorkerPolicy(max_attempts=3, initial_delay=0, max_delay=0),
    )
    post(client, "pull_request", webhook_fixture("pull_request.opened"), delivery="dead")
    for _ in range(5):
        deps.worker.drain()
    stored = deps.inbox.get("dead")
    assert stored.status == "dead" and stored.attempts == 3
    assert "GitHubUnavailable" in stored.last_error
    assert len(fake.calls_to("GET", r"/pulls/2/files$")) == 3 * 2
    assert deps.inbox.retry("dead")
    assert deps.inbox.get("dead").status == "queued"


def test_pr_without_plans_gets_neutral_checks(settings, fake):
    repo = fake.repo(REPO)
    repo.commit({"README.md": "changed\n", "policies/teams.yaml": POLICY}, sha=HEAD)
    client, deps = _setup(settings)
    post(client, "pull_request", webhook_fixture("pull_request.opened"))
    deps.worker.drain()
    runs = fake.runs_for(HEAD)
    assert {r["conclusion"] for r in runs.values()} == {"neutral"}
    assert len(fake.calls) <= 6  # token, files, 4 check runs


def test_invalid_plan_annotated_at_file_line(settings, fake):
    bad = PLAN.replace(b"action: noop", b"action: nope")
    repo = fake.repo(REPO)
    repo.commit({"policies/teams.yaml": POLICY, "plans/hello.yaml": bad}, sha=HEAD)
    client, deps = _setup(settings)
    post(client, "pull_request", webhook_fixture("pull_request.opened"))
    deps.worker.drain()
    validate = fake.runs_for(HEAD)["plangate/validate"]
    assert validate["conclusion"] == "failure"
    (ann,) = validate["annotations"]
    assert ann["path"] == "plans/hello.yaml" and ann["start_line"] > 1
    assert fake.runs_for(HEAD)["plangate/policy"]["conclusion"] == "failure"
    assert fake.schema_errors == []


def test_superseded_head_is_coalesced(settings, fake):
    client, deps = _setup(settings)
    old = webhook_fixture("pull_request.synchronize")
    old["pull_request"]["head"]["sha"] = "1" * 40
    post(client, "pull_request", old, delivery="old")
    post(client, "pull_request", webhook_fixture("pull_request.synchronize"), delivery="new")
    assert deps.inbox.get("old").status == "superseded"
    deps.worker.drain()
    assert deps.inbox.get("new").status == "done"
    assert fake.runs_for("1" * 40) == {}


def test_check_suite_requested_after_pr_event_adds_nothing(settings, fake):
    client, deps = _setup(settings)
    fake.installations.add(957387)
    post(client, "pull_request", webhook_fixture("pull_request.opened"))
    post(client, "check_suite", webhook_fixture("check_suite.requested"))
    deps.worker.drain()
    assert len(fake.check_runs) == 4


def test_check_suite_rerequested_creates_fresh_runs(settings, fake):
    client, deps = _setup(settings)
    post(client, "pull_request", webhook_fixture("pull_request.opened"))
    deps.worker.drain()
    post(client, "check_suite", webhook_fixture("check_suite.rerequested"))
    deps.worker.drain()
    assert len(fake.check_runs) == 8
    assert fake.schema_errors == []


def test_push_changing_policies_reevaluates_open_prs(settings, fake):
    client, deps = _setup(settings)
    push = webhook_fixture("push.default_branch")
    push["commits"] = [{"id": "a", "added": [], "removed": [], "modified": ["policies/x.yaml"]}]
    fake.repo(REPO).pulls[2] = Pull(2, HEAD, BASE, "master")
    post(client, "push", push)
    deps.worker.drain()
    assert set(fake.runs_for(HEAD)) == NAMES


def test_push_not_touching_policies_ignored(settings, fake):
    client, deps = _setup(settings)
    push = webhook_fixture("push.default_branch")
    push["commits"] = [{"id": "a", "added": ["README.md"], "removed": [], "modified": []}]
    post(client, "push", push)
    deps.worker.drain()
    assert fake.calls == []


def test_installation_events_recorded(settings, fake):
    client, deps = _setup(settings)
    post(client, "installation", webhook_fixture("installation.created"))
    deps.worker.drain()
    assert deps.inbox.installation_status(957387) == "active"
    deleted = webhook_fixture("installation.created")
    deleted["action"] = "deleted"
    post(client, "installation", deleted)
    deps.worker.drain()
    assert deps.inbox.installation_status(957387) == "deleted"


def test_rest_calls_per_event_within_budget(settings, fake):
    """Issue 5 targets: opened on a new base <= 10, cached base <= 7, a review <= 3."""
    client, deps = _setup(settings)
    post(client, "pull_request", webhook_fixture("pull_request.opened"))
    deps.worker.drain()
    first = len(fake.calls)
    assert first <= 10

    repo = fake.repo(REPO)
    other = PLAN.replace(b"id: local-hello", b"id: other-hello")
    head2 = repo.commit({"policies/teams.yaml": POLICY, "plans/other.yaml": other})
    repo.pulls[3] = Pull(3, head2, BASE, "master")
    second = webhook_fixture("pull_request.opened")
    second["pull_request"]["number"] = 3
    second["pull_request"]["head"]["sha"] = head2
    post(client, "pull_request", second)
    deps.worker.drain()
    cached = len(fake.calls) - first
    assert cached <= 7

    post(client, "pull_request_review", webhook_fixture("pull_request_review.submitted"))
    deps.worker.drain()
    review = len(fake.calls) - first - cached
    assert review <= 3
    # token, files, plan blob, policies/ at the base (one GraphQL query), 4 check runs
    assert (first, cached, review) == (8, 6, 2)  # review: reviews + the approval check
    # policies/ once (the cached base read nothing), then the review's reviews with commits
    assert len(fake.calls_to("POST", r"^/graphql$")) == 2


def test_policy_files_do_not_add_requests(settings, fake):
    """Six policy files on a new base cost what one does: one query, however many files."""
    repo = fake.repo(REPO)
    policies = {f"policies/p{i}.yaml": POLICY for i in range(5)}
    repo.commit({"README.md": "hi\n", "policies/teams.yaml": POLICY, **policies}, sha=BASE)
    client, deps = _setup(settings)
    post(client, "pull_request", webhook_fixture("pull_request.opened"))
    deps.worker.drain()
    assert len(fake.calls) == 8
    assert fake.calls_to("GET", r"/git/(blobs|trees)/") == [
        c for c in fake.calls if c.path.endswith("/git/blobs/" + _plan_blob())
    ]


def _plan_blob() -> str:
    from ghfake import git_blob_sha

    return git_blob_sha(PLAN)


def test_title_edit_ignored_base_change_reevaluated(settings, fake):
    client, deps = _setup(settings)
    edited = webhook_fixture("pull_request.opened")
    edited["action"] = "edited"
    edited["changes"] = {"title": {"from": "old"}}
    post(client, "pull_request", edited)
    deps.worker.drain()
    assert fake.calls == []
    edited["changes"] = {"base": {"ref": {"from": "develop"}, "sha": {"from": "0" * 40}}}
    post(client, "pull_request", edited)
    deps.worker.drain()
    assert set(fake.runs_for(HEAD)) == NAMES


def test_check_run_requested_action_reruns(settings, fake):
    client, deps = _setup(settings)
    payload = webhook_fixture("check_run.rerequested")
    payload["repository"]["full_name"] = REPO
    payload["check_run"]["head_sha"] = HEAD
    payload["check_run"]["pull_requests"] = [{"number": 2}]
    post(client, "check_run", payload)
    deps.worker.drain()
    assert set(fake.runs_for(HEAD)) == NAMES
    assert deps.inbox.counts() == {"done": 1}


def test_closed_pr_not_evaluated(settings, fake):
    client, deps = _setup(settings)
    payload = webhook_fixture("pull_request.reopened")
    payload["pull_request"]["state"] = "closed"
    post(client, "pull_request", payload)
    deps.worker.drain()
    assert fake.calls == []


@pytest.mark.parametrize(
    "fixture",
    [
        "pull_request.opened",
        "pull_request.synchronize",
        "pull_request.reopened",
        "pull_request.ready_for_review",
    ],
)
def test_each_pull_request_action_produces_the_four_checks(settings, fake, fixture):
    client, deps = _setup(settings)
    payload = webhook_fixture(fixture)
    payload["pull_request"]["state"] = "open"
    assert post(client, "pull_request", payload).status_code == 202
    deps.worker.drain()
    assert set(fake.runs_for(HEAD)) == NAMES
    assert fake.schema_errors == []


def test_review_dismissed_updates_approval_only(settings, fake):
    client, deps = _setup(settings)
    post(client, "pull_request", webhook_fixture("pull_request.opened"))
    deps.worker.drain()
    post(client, "pull_request_review", webhook_fixture("pull_request_review.dismissed"))
    deps.worker.drain()
    runs = [r for r in fake.check_runs.values() if r["name"] == "plangate/approval"]
    assert len(runs) == 2  # a new approval run on the same head; the others untouched
    assert len(fake.check_runs) == 5


def test_pr_only_removing_a_plan_says_so(settings, fake):
    repo = fake.repo(REPO)
    repo.commit(
        {"README.md": "hi\n", "policies/teams.yaml": POLICY, "plans/old.yaml": PLAN},
        branch="master",
        sha=BASE,
    )
    repo.commit({"README.md": "hi\n", "policies/teams.yaml": POLICY}, sha=HEAD)
    client, deps = _setup(settings)
    post(client, "pull_request", webhook_fixture("pull_request.opened"))
    deps.worker.drain()
    validate = fake.runs_for(HEAD)["plangate/validate"]
    assert validate["conclusion"] == "neutral"
    assert validate["output"]["title"] == "1 plan file(s) removed; nothing to check"


def test_worker_and_api_metrics(settings, fake):
    from app.observability.metrics import REGISTRY

    def value(name, **labels):
        return REGISTRY.get_sample_value(name, labels) or 0.0

    processed = value("plangate_webhook_deliveries_processed_total", event="pull_request")
    posts = value("plangate_github_api_calls_total", method="POST", status="2xx")
    checks = value(
        "plangate_check_run_updates_total", check="plangate/validate", conclusion="success"
    )
    client, deps = _setup(settings)
    post(client, "pull_request", webhook_fixture("pull_request.opened"))
    deps.worker.drain()
    assert value("plangate_webhook_deliveries_processed_total", event="pull_request") == (
        processed + 1
    )
    # the installation token, the policies/ GraphQL query and 4 check runs
    assert value("plangate_github_api_calls_total", method="POST", status="2xx") == posts + 6
    assert (
        value("plangate_check_run_updates_total", check="plangate/validate", conclusion="success")
        == checks + 1
    )
    assert value("plangate_github_rate_limit_remaining", resource="core") == 4999
