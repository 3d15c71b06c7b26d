"""Hostile input: every loader and the webhook endpoint say a clear "no" and do nothing else.

Each test asserts the *kind* of rejection (error type and issue code), that the message names
the file (and the line where there is one), and that no side effect happened: no file written,
no delivery stored, no call to GitHub. Hypothesis runs are bounded (see ``FUZZ``); the whole
module runs in a few seconds.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import hypothesis
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from srvkit import HEAD, SECRET, create_app, make_deps, post, webhook_fixture

from app.actions.builtin import ShellInputs
from app.approvals.attest import PlanSubject
from app.cli import main
from app.errors import PlanError, PolicyLoadError
from app.execute.actions.base import ActionContext
from app.execute.actions.shell import ShellAction
from app.plan.loader import LoadedPlan, load_plan_bytes
from app.policy.loader import PolicySet, load_policy_files
from app.server.webhooks import sign

ROOT = Path(__file__).resolve().parents[2]
HELLO = (ROOT / "plans" / "local-hello.yaml").read_bytes()
POLICIES = {
    f"policies/{p.name}": p.read_bytes() for p in sorted((ROOT / "policies").glob("*.yaml"))
}
PLAN_PATH = "plans/hostile.yaml"
POLICY_PATH = "policies/hostile.yaml"
#: a problem of the whole policy set (a missing section) names the directory
POLICY_NAMES = (POLICY_PATH, "policies/")

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


# -- helpers ------------------------------------------------------------------------------------


def _plan_rejected(raw: bytes, path: str = PLAN_PATH) -> PlanError:
    with pytest.raises(PlanError) as info:
        load_plan_bytes(path, raw)
    exc = info.value
    assert exc.issues, "a rejection names at least one problem"
    for issue in exc.issues:
        assert issue.path == path, "every problem names the file"
        assert issue.code and issue.message
    return exc


def _policy_rejected(raw: bytes, path: str = POLICY_PATH) -> PolicyLoadError:
    with pytest.raises(PolicyLoadError) as info:
        load_policy_files({path: raw})
    exc = info.value
    assert exc.issues
    for issue in exc.issues:
        assert issue.path in (path, "policies/"), "the file, or the set for set-wide problems"
        assert issue.code and issue.message
    return exc


def _codes(exc: PlanError | PolicyLoadError) -> set[str]:
    return {i.code for i in exc.issues}


def _plan_or_clear_error(raw: bytes) -> None:
    try:
        loaded = load_plan_bytes(PLAN_PATH, raw)
    except PlanError as exc:
        assert exc.issues and all(i.path == PLAN_PATH and i.message for i in exc.issues)
    else:
        assert isinstance(loaded, LoadedPlan)


def _policy_or_clear_error(raw: bytes) -> None:
    try:
        policy = load_policy_files({POLICY_PATH: raw})
    except PolicyLoadError as exc:
        assert exc.issues and all(i.path in POLICY_NAMES and i.message for i in exc.issues)
    else:
        assert isinstance(policy, PolicySet)


# -- arbitrary bytes and structures -------------------------------------------------------------

#: JSON-like values of any shape (YAML flow syntax is a superset of JSON)
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=30,
)


@FUZZ
@given(st.binary(max_size=2000))
def test_plan_loader_arbitrary_bytes_only_plan_errors(raw):
    _plan_or_clear_error(raw)


@FUZZ
@given(st.binary(max_size=2000))
def test_policy_loader_arbitrary_bytes_only_policy_errors(raw):
    _policy_or_clear_error(raw)


@FUZZ
@given(st.dictionaries(st.text(max_size=12), VALUES, max_size=8))
def test_plan_loader_arbitrary_structures(doc):
    _plan_or_clear_error(json.dumps(doc).encode())


@FUZZ
@given(st.dictionaries(st.text(max_size=12), VALUES, max_size=8))
def test_policy_loader_arbitrary_structures(doc):
    _policy_or_clear_error(
        json.dumps({"apiVersion": "plangate.dev/v1", "kind": "Policy", **doc}).encode()
    )


# -- deep nesting and huge inputs ---------------------------------------------------------------

DEEP = {
    "flow-lists": b"id: " + b"[" * 10_000 + b"]" * 10_000 + b"\n",
    "flow-maps": b"id: " + b"{a: " * 10_000 + b"1" + b"}" * 10_000 + b"\n",
    "block-lists": b"".join(b"  " * i + b"-\n" for i in range(500)),
    "block-maps": b"".join(b"  " * i + b"k:\n" for i in range(500)) + b"  " * 500 + b"v\n",
}


@pytest.mark.parametrize("shape", sorted(DEEP))
def test_deep_nesting_rejected_by_both_loaders(shape):
    raw = DEEP[shape]
    for exc in (_plan_rejected(raw), _policy_rejected(raw)):
        assert _codes(exc) & {"yaml.too_deep", "yaml.syntax"}, exc.issues
        assert all(i.line is not None for i in exc.issues), "the line of the nesting is named"


def test_huge_file_rejected_before_parsing():
    raw = b"id: " + b"a" * 5_000_000 + b"\n"
    for exc in (_plan_rejected(raw), _policy_rejected(raw)):
        assert _codes(exc) == {"file.too_large"}
        assert "limit" in exc.issues[0].message


def test_huge_string_in_a_field_is_a_field_error_at_its_line():
    raw = HELLO.replace(b"title: Say hello from a local plan", b"title: " + b"x" * 500_000)
    exc = _plan_rejected(raw)
    assert exc.issues[0].line == 6, exc.issues
    assert "title" in exc.issues[0].message


def test_alias_bomb_rejected():
    raw = b"a: &a [x, x]\nb: &b [*a, *a]\nc: &c [*b, *b]\nd: [*c, *c]\n"
    for exc in (_plan_rejected(raw), _policy_rejected(raw)):
        assert any("alias" in i.code or "anchor" in i.code for i in exc.issues), exc.issues


# -- unicode confusables in ids -----------------------------------------------------------------

CONFUSABLE = {
    "cyrillic-a": "gre\u0430t",  # Cyrillic U+0430 looks like Latin 'a'
    "cyrillic-e": "gr\u0435et",
    "fullwidth": "\uff47reet",
    "zero-width-joiner": "gre\u200det",
    "zero-width-space": "greet\u200b",
    "rtl-override": "greet\u202e",
    "combining-accent": "gre\u0301et",
}


@pytest.mark.parametrize("name", sorted(CONFUSABLE))
def test_confusable_step_id_rejected_by_the_ascii_id_rule(name):
    raw = HELLO.replace(b"id: greet\n", f"id: {CONFUSABLE[name]}\n".encode())
    exc = _plan_rejected(raw)
    (issue,) = [i for i in exc.issues if i.code == "field.invalid"]
    assert issue.line == 11, "the line of the id"
    assert "is not a valid id" in issue.message
    assert "lowercase letters, digits" in issue.message, "the message says what is allowed"


@FUZZ
@given(
    st.text(
        alphabet=st.characters(min_codepoint=0x80, blacklist_categories=("Cs",)),
        min_size=1,
        max_size=3,
    ),
    st.integers(0, 5),
)
def test_any_non_ascii_character_in_a_step_id_is_rejected(chars, at):
    step_id = "greet"[:at] + chars + "greet"[at:]
    raw = HELLO.replace(b"id: greet\n", json.dumps({"id": step_id}).encode()[1:-1] + b"\n")
    exc = _plan_rejected(raw)
    assert any(i.code == "field.invalid" and i.line == 11 for i in exc.issues) or any(
        i.code.startswith("yaml.") for i in exc.issues
    ), exc.issues


def test_confusable_plan_id_rejected():
    exc = _plan_rejected(HELLO.replace(b"id: local-hello", "id: local-he\u217cl0".encode()))
    assert any(i.code == "field.invalid" and i.line == 5 for i in exc.issues), exc.issues


# -- path traversal -----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["../../etc/passwd", "..", "a/../b", "/etc/passwd", "a\\..\\b"])
def test_path_traversal_in_plan_and_step_ids_rejected(bad):
    """Ids become file names, git paths and refs (state, attestations, incidents): no '..'."""
    quoted = json.dumps(bad).encode()
    for raw in (
        HELLO.replace(b"id: local-hello", b"id: " + quoted),
        HELLO.replace(b"id: greet\n", b"id: " + quoted + b"\n"),
    ):
        exc = _plan_rejected(raw)
        assert any(i.code == "field.invalid" and "not a valid id" in i.message for i in exc.issues)


@pytest.mark.parametrize("name", ["../plans/x.yaml", "/etc/passwd", "plans/../policies/a.yaml"])
def test_path_traversal_in_attestation_subject_rejected(name):
    """An attestation names the plan file relative to the repository, never outside it."""
    with pytest.raises(ValueError, match="relative"):
        PlanSubject(name=name, digest="sha256:" + "0" * 64)


def test_plan_path_with_traversal_is_only_a_name_in_messages(tmp_path, monkeypatch):
    """The loader never opens anything a plan names; a hostile path only appears in messages."""
    monkeypatch.chdir(tmp_path)
    exc = _plan_rejected(b"kind: Plan\n", path="../../../etc/passwd")
    assert all(i.path == "../../../etc/passwd" for i in exc.issues)
    assert list(tmp_path.iterdir()) == []


# -- shell inputs are data, never interpreted ---------------------------------------------------

INJECTIONS = [
    "; touch PWNED",
    "$(touch PWNED)",
    "`touch PWNED`",
    "| touch PWNED",
    "&& touch PWNED",
    "\n touch PWNED",
    "../../../../etc/passwd",
    "${HOME}",
    "'; touch PWNED; '",
]


def _shell(argv: list[str], work: Path) -> dict:
    ctx = ActionContext(
        plan_id="p",
        plan_digest="sha256:" + "0" * 64,
        step_id="s",
        attempt=1,
        idempotency_key="k",
        correlation_id="c",
        timeout=30,
        work_dir=work,
    )
    inputs = ShellInputs.model_validate({"run": argv})
    return asyncio.run(ShellAction().run(inputs, ctx)).outputs


def test_shell_metacharacters_in_argv_are_passed_as_data(tmp_path):
    out = _shell(["printf", "%s\\n", *INJECTIONS], tmp_path)
    assert out["exit_code"] == 0
    assert out["stdout"] == "\n".join(INJECTIONS), "each argument printed literally"
    assert "$(touch PWNED)" in out["stdout"] and "${HOME}" in out["stdout"]
    assert not (tmp_path / "PWNED").exists()
    assert list(tmp_path.iterdir()) == []


@settings(max_examples=60, deadline=None)
@given(
    st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
        max_size=40,
    )
)
def test_any_argv_string_reaches_the_program_unchanged(text):
    import tempfile

    with tempfile.TemporaryDirectory() as work:
        out = _shell(["printf", "%s", text], Path(work))
        assert out["exit_code"] == 0
        assert out["stdout"] == text.encode("utf-8").decode("utf-8", "replace").strip()
        assert list(Path(work).iterdir()) == []


def test_plangate_run_of_an_injection_plan_creates_no_file(tmp_path, monkeypatch, capsys):
    """The real CLI and the real shell action: ``; touch PWNED`` is one argument of echo."""
    import subprocess

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("USER", "carol")
    plan = tmp_path / "plans" / "inject.yaml"
    plan.parent.mkdir()
    record = (
        "import json, sys, pathlib; pathlib.Path('argv.json').write_text(json.dumps(sys.argv[1:]))"
    )
    argv = json.dumps(["python3", "-c", record, *INJECTIONS])
    plan.write_text(
        "apiVersion: plangate.dev/v1\nkind: Plan\nid: inject\ntitle: t\nteam: platform\n"
        "environment: local\nresources: [local/scratch]\nsteps:\n"
        f"  - id: echo\n    action: shell\n    mutates: false\n    with: {{run: {argv}}}\n"
    )
    code = main(
        [
            "run",
            str(plan),
            "--format",
            "json",
            "--policies",
            str(ROOT / "policies"),
            "--data-dir",
            str(tmp_path / "data"),
            "--audit-repo",
            str(tmp_path / "audit.git"),
        ]
    )
    result = json.loads(capsys.readouterr().out)
    assert code == 0, result
    assert result["status"] == "succeeded"
    assert json.loads((tmp_path / "argv.json").read_text()) == INJECTIONS, "received verbatim"
    assert not list(tmp_path.rglob("PWNED"))


# -- YAML tags ----------------------------------------------------------------------------------

TAGS = {
    "python-apply": b"id: !!python/object/apply:os.system ['touch PWNED']\n",
    "python-name": b"id: !!python/name:os.system\n",
    "python-object-new": b"steps: !!python/object/new:subprocess.Popen [[touch, PWNED]]\n",
    "binary": b"title: !!binary dG91Y2ggUFdORUQ=\n",
    "custom": b"title: !vault secret/prod\n",
    "verbatim": b"title: !<tag:yaml.org,2002:python/none> x\n",
    "set": b"resources: !!set {a, b}\n",
}


@pytest.mark.parametrize("name", sorted(TAGS))
def test_yaml_tags_rejected_with_line_and_nothing_runs(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = b"apiVersion: plangate.dev/v1\nkind: Plan\n" + TAGS[name]
    for exc in (_plan_rejected(raw), _policy_rejected(raw)):
        tag_issues = [i for i in exc.issues if i.code == "yaml.tag"]
        assert tag_issues, exc.issues
        assert tag_issues[0].line == 3
        assert "is not allowed" in tag_issues[0].message
    assert list(tmp_path.iterdir()) == [], "nothing was constructed or executed"


def test_yaml_tag_error_names_file_and_line_in_check_output(tmp_path, capsys):
    plan = tmp_path / "tagged.yaml"
    plan.write_bytes(HELLO.replace(b"title: Say", b"title: !!python/object/apply:os.system Say"))
    assert main(["check", str(plan), "--policies", str(ROOT / "policies")]) == 2
    out = capsys.readouterr()
    assert f"{plan}:6" in out.out + out.err
    assert "!!python/object/apply:os.system" in out.out + out.err


# -- the webhook endpoint -----------------------------------------------------------------------

HEADER_VALUES = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)


def _client(settings):
    deps = make_deps(settings)
    return TestClient(create_app(settings, deps)), deps


def _nothing_happened(deps, fake) -> None:
    assert deps.inbox.counts() == {}
    assert fake.calls == []


@FUZZ
@given(
    body=st.binary(max_size=3000),
    event=st.sampled_from(["pull_request", "pull_request_review", "push", "ping", "x"])
    | HEADER_VALUES,
    signature=st.none()
    | HEADER_VALUES
    | st.binary(min_size=32, max_size=32).map(lambda b: "sha256=" + b.hex())
    | st.binary(max_size=64).map(lambda k: ("sha256", k)),
    extra=st.dictionaries(
        st.sampled_from(["X-Forwarded-For", "X-Hub-Signature", "Content-Type", "User-Agent"]),
        HEADER_VALUES,
        max_size=3,
    ),
)
def test_webhook_wrong_or_missing_signature_always_401_nothing_stored(
    settings, fake, body, event, signature, extra
):
    client, deps = _client(settings)
    if isinstance(signature, tuple):  # a well-formed signature with another key
        key = signature[1]
        if key == SECRET.encode():
            key += b"x"
        signature = sign(key, body)
    headers = {"X-GitHub-Event": event, "X-GitHub-Delivery": str(uuid.uuid4()), **extra}
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    r = client.post("/webhook", content=body, headers=headers)
    assert r.status_code == 401, (r.status_code, r.text)
    _nothing_happened(deps, fake)


@FUZZ
@given(other=st.binary(max_size=3000))
def test_webhook_signature_of_a_different_body_fails(settings, fake, other):
    client, deps = _client(settings)
    body = json.dumps(webhook_fixture("pull_request.opened")).encode()
    if other == body:
        other += b" "
    r = post(client, "pull_request", other, signature=sign(SECRET.encode(), body))
    assert r.status_code == 401
    _nothing_happened(deps, fake)


def test_webhook_replayed_delivery_processed_once(settings, fake):
    """The same X-GitHub-Delivery after it was processed: acknowledged, not processed again."""
    client, deps = _client(settings)
    payload = webhook_fixture("pull_request.opened")
    assert post(client, "pull_request", payload, delivery="old-1").status_code == 202
    assert deps.worker.drain() == 1
    calls = len(fake.calls)
    runs = dict(fake.check_runs)
    for _ in range(3):
        r = post(client, "pull_request", payload, delivery="old-1")
        assert r.status_code == 200 and r.json()["status"] == "duplicate"
    assert deps.worker.drain() == 0
    assert len(fake.calls) == calls, "nothing was sent to GitHub for the replays"
    assert fake.check_runs == runs
    assert deps.inbox.counts() == {"done": 1}
    assert set(fake.runs_for(HEAD)) == {
        "plangate/validate",
        "plangate/policy",
        "plangate/cost",
        "plangate/approval",
    }


#: JSON of any shape, with GitHub-looking keys in it so parsing gets past the first lookups
SIGNED_PAYLOADS = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(
        st.sampled_from(
            ["action", "installation", "id", "repository", "full_name", "pull_request",
             "number", "head", "base", "sha", "ref", "user", "login", "review", "commit_id",
             "commits", "modified", "state", "x"]
        ),
        inner,
        max_size=5,
    ),
    max_leaves=25,
)  # fmt: skip


@FUZZ
@given(
    payload=SIGNED_PAYLOADS,
    event=st.sampled_from(
        ["pull_request", "pull_request_review", "push", "check_suite", "check_run",
         "installation", "installation_repositories", "ping", "issues"]
    ),
)  # fmt: skip
def test_correctly_signed_hostile_payloads_never_crash_the_server(settings, fake, payload, event):
    """Signed (so GitHub sent it) but of any shape: a 2xx or 400, never a 5xx; the worker
    finishes every stored delivery (done, retried or dead-lettered) without raising."""
    client, deps = _client(settings)
    r = post(client, event, json.dumps(payload).encode())
    assert r.status_code in (200, 202, 400), (r.status_code, r.text)
    hypothesis.event(f"{r.status_code} {r.json().get('status', '') if r.status_code < 300 else ''}")
    deps.worker.drain()
    assert not deps.inbox.counts().get("processing"), deps.inbox.counts()
    hypothesis.event("stored: " + ",".join(sorted(deps.inbox.counts())))
    for d in deps.inbox.list(status="dead"):
        hypothesis.event("dead: " + (d.last_error or "")[:150])


@FUZZ
@given(
    fixture=st.sampled_from(
        ["pull_request.opened", "pull_request.synchronize", "pull_request_review.submitted"]
    ),
    top=st.dictionaries(
        st.sampled_from(["action", "number", "repository"]), SIGNED_PAYLOADS, max_size=2
    ),
    pull=st.dictionaries(
        st.sampled_from(["number", "head", "base", "user", "state", "merged", "draft"]),
        SIGNED_PAYLOADS,
        max_size=3,
    ),
)
def test_signed_real_deliveries_with_hostile_fields_never_crash(settings, fake, fixture, top, pull):
    """A real installed-repository delivery with some fields replaced by anything."""
    client, deps = _client(settings)
    payload = webhook_fixture(fixture)
    payload.update(top)
    if isinstance(payload.get("pull_request"), dict):
        payload["pull_request"].update(pull)
    r = post(client, fixture.split(".")[0], json.dumps(payload).encode())
    assert r.status_code in (200, 202, 400), (r.status_code, r.text)
    hypothesis.event(f"{r.status_code} {r.json().get('status', '') if r.status_code < 300 else ''}")
    deps.worker.drain()
    assert not deps.inbox.counts().get("processing"), deps.inbox.counts()
    hypothesis.event("stored: " + ",".join(sorted(deps.inbox.counts())))
    for d in deps.inbox.list(status="dead"):
        hypothesis.event("dead: " + (d.last_error or "")[:150])


@pytest.mark.parametrize(
    "field, value",
    [
        ("number", True),
        ("number", 2.5),
        ("number", "2"),
        ("head", {"sha": 123}),
        ("head", {"sha": "../../etc"}),
        ("base", {"sha": "f" * 40, "ref": ["main"]}),
        ("user", "mallory"),
    ],
)
def test_malformed_pull_request_fields_are_dead_lettered_without_github_calls(
    settings, fake, field, value
):
    """Signed but with a wrong type where a SHA or number belongs: nothing reaches GitHub."""
    client, deps = _client(settings)
    payload = webhook_fixture("pull_request.opened")
    payload["pull_request"][field] = value
    r = post(client, "pull_request", json.dumps(payload).encode())
    assert r.status_code in (202, 400)
    deps.worker.drain()
    if field == "user":  # a missing author is tolerated: the author simply never approves
        return
    assert not [c for c in fake.calls if c[0] in ("POST", "PATCH")], fake.calls
    if r.status_code == 202:
        (dead,) = deps.inbox.list(status="dead")
        assert "unreadable delivery" in (dead.last_error or "")
