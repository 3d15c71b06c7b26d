"""Check-run rendering: limits GitHub enforces, verdict titles, and the OpenAPI shape."""

from __future__ import annotations

import jsonschema
import pytest
from ghfake import OPENAPI
from hypothesis import given, settings
from hypothesis import strategies as st

from app.check import FileResult
from app.errors import Issue
from app.github.checks import (
    ANNOTATIONS_PER_REQUEST,
    Annotation,
    CheckOutcome,
    check_run_requests,
    no_plans_outcome,
    render_validate,
    truncate,
)
from app.plan.loader import load_plan

GITHUB_TEXT_LIMIT = 65_535
SHA = "c" * 40


def _valid(operation: str, body: dict) -> list[str]:
    schema = OPENAPI[operation]["request_body_schema"]
    return [e.message for e in jsonschema.Draft4Validator(schema).iter_errors(body)]


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=0, max_size=70_000), st.integers(min_value=50, max_value=66_000))
def test_truncate_never_exceeds_limit(text, limit):
    out = truncate(text, limit, pointer="https://plangate.example/r/1")
    assert len(out) <= limit
    if len(text) <= limit:
        assert out == text


def test_huge_summary_truncated_below_github_limit_with_pointer():
    outcome = CheckOutcome("plangate/policy", "failure", "Denied", "row\n" * 40_000, "x" * 90_000)
    first, _ = check_run_requests(outcome, head_sha=SHA, details_url="https://pg.example/pr/1")
    assert len(first["output"]["summary"]) < GITHUB_TEXT_LIMIT
    assert len(first["output"]["text"]) < GITHUB_TEXT_LIMIT
    assert first["output"]["summary"].endswith("Full report: https://pg.example/pr/1")
    assert _valid("checks/create", first) == []


def test_annotations_batched_by_50():
    anns = tuple(Annotation("plans/a.yaml", i + 1, f"error {i}") for i in range(120))
    outcome = CheckOutcome("plangate/validate", "failure", "120 errors", "s", annotations=anns)
    first, more = check_run_requests(outcome, head_sha=SHA)
    batches = [first["output"]["annotations"], *(b["output"]["annotations"] for b in more)]
    assert [len(b) for b in batches] == [50, 50, 20]
    assert ANNOTATIONS_PER_REQUEST == 50
    assert [a["start_line"] for b in batches for a in b] == list(range(1, 121))
    assert _valid("checks/create", first) == []
    for body in more:
        assert _valid("checks/update", body) == []


def test_render_validate_success_lists_digest(repo_root):
    loaded = load_plan(repo_root / "plans" / "local-hello.yaml")
    outcome = render_validate([FileResult("plans/local-hello.yaml", plan=loaded)])
    assert outcome.conclusion == "success"
    assert outcome.title == "1 plan file(s) valid"
    assert loaded.digest in outcome.summary


def test_render_validate_failure_annotates_each_issue():
    issues = [
        Issue("plans/a.yaml", "unknown action 'nope'", "action.unknown", line=7, hint="see list"),
        Issue("plans/a.yaml", "needs unknown step 'x'", "needs.unknown", line=9),
    ]
    outcome = render_validate([FileResult("plans/a.yaml", issues=issues)], removed=["plans/b.yaml"])
    assert outcome.conclusion == "failure"
    assert outcome.title == "2 error(s) in 1 of 1 plan file(s)"
    assert [(a.path, a.start_line) for a in outcome.annotations] == [
        ("plans/a.yaml", 7),
        ("plans/a.yaml", 9),
    ]
    assert "`plans/a.yaml:7`" in outcome.summary and "removed" in outcome.summary
    first, _ = check_run_requests(outcome, head_sha=SHA)
    assert _valid("checks/create", first) == []


def test_markdown_table_cells_escaped():
    issues = [Issue("plans/a|b.yaml", "bad", "x", line=1)]
    outcome = render_validate([FileResult("plans/a|b.yaml", issues=issues)])
    assert "`plans/a\\|b.yaml`" in outcome.summary


def test_outcome_needs_a_title():
    with pytest.raises(ValueError, match="title"):
        CheckOutcome("plangate/cost", "success", "", "summary")


def test_no_plans_is_neutral():
    outcome = no_plans_outcome("plangate/cost")
    assert outcome.conclusion == "neutral"
    first, more = check_run_requests(outcome, head_sha=SHA, details_url="https://x.example/")
    assert more == [] and first["details_url"] == "https://x.example/"
    assert _valid("checks/create", first) == []
