"""The ``plangate/approval`` check run and the CLI table: formatting only, conclusions mapped."""

from __future__ import annotations

from dataclasses import replace

import pytest
from approval_fakes import HEAD, OLD, T0, FakePullContext

from app.approvals.context import ChangedFile
from app.approvals.gate import GateResult, evaluate_gate
from app.approvals.render import (
    CHECK_NAME,
    check_run_output,
    conclusion,
    render_markdown,
    render_text,
    title,
)
from app.errors import GitHubUnavailable
from app.policy.requirements import AnyOf, ApprovalRequirements, Requirement

REQS = ApprovalRequirements(
    all_of=(
        Requirement(id="sre", teams=("sre",), description="SRE review"),
        AnyOf(
            id="db", any_of=(Requirement(id="dba", teams=("dba",)), Requirement(id="two", count=2))
        ),
    ),
    team_members={"sre": ("sam",), "dba": ("dora",)},
)


def _result(*approvers: str, **ctx_fields) -> GateResult:
    ctx = FakePullContext(**ctx_fields).approve(*approvers)
    return evaluate_gate(REQS, ctx, now=T0)


def test_success_only_when_satisfied_and_attestation_stored():
    satisfied = _result("sam", "dora")
    assert satisfied.satisfied
    assert conclusion(satisfied, attestation_stored=True) == "success"
    assert conclusion(satisfied) == "action_required"
    out = check_run_output(satisfied)
    assert out.conclusion == "action_required"
    assert out.summary.startswith("Approval attestation not stored yet.")
    stored = check_run_output(satisfied, attestation_stored=True)
    assert (stored.name, stored.conclusion) == (CHECK_NAME, "success")
    assert stored.title == "Approved: 2 of 2 requirements satisfied"


@pytest.mark.parametrize(
    "result",
    [
        _result("sam"),
        _result("sam", "dora", reviews_error=GitHubUnavailable("GitHub returned 502")),
    ],
    ids=["pending", "error"],
)
def test_not_satisfied_is_action_required_even_if_stored(result: GateResult):
    assert conclusion(result, attestation_stored=True) == "action_required"


def test_pending_table_shows_who_is_still_needed():
    md = render_markdown(_result("sam"))
    assert "| | Requirement | Who can approve | Approved by | Still needed |" in md
    assert "| ✅ | `sre` SRE review | team sre with write access | @sam ([review](" in md
    assert "one of: dba: 1 approval from team dba with write access" in md
    assert title(_result("sam")) == "Waiting for approval: 1 of 2 requirements satisfied"


def test_dismissed_approval_reason_rendered():
    result = evaluate_gate(
        REQS,
        FakePullContext(
            changed_files_value=[ChangedFile("plans/db.yaml")],
            file_blobs_value={OLD: {"plans/db.yaml": "x"}, HEAD: {"plans/db.yaml": "y"}},
        ).approve("alice", commit=OLD),
        now=T0,
    )
    md = render_markdown(result)
    assert "approval by @alice on bbbbbbb no longer counts: plans/db.yaml changed since" in md
    assert "### Not counted" in md
    assert "not counted: approval by @alice on bbbbbbb no longer counts" in render_text(result)


def test_error_still_renders_partial_explanation():
    result = _result("sam", reviews_error=GitHubUnavailable("GitHub returned 502"))
    md = render_markdown(result)
    assert "### Could not evaluate" in md
    assert "reviews: GitHub returned 502" in md
    assert "`sre` SRE review" in md  # the table is still there
    assert title(result) == "Approvals could not be evaluated (retrying)"
    assert "error: reviews: GitHub returned 502" in render_text(result)


def test_rejection_rendered():
    ctx = FakePullContext().approve("sam", "dora")
    ctx.review("dora", "CHANGES_REQUESTED")
    result = evaluate_gate(REQS, ctx, now=T0)
    assert title(result) == "Changes requested by @dora"
    assert "### Changes requested" in render_markdown(result)
    assert render_text(result).startswith("REJECTED: changes requested by @dora")


def test_policy_and_pr_text_is_escaped():
    evil = "plans/x|[click](https://evil.example)<img>.yaml"
    result = evaluate_gate(
        ApprovalRequirements(all_of=(Requirement(id="r|*x*", description="[a](b)"),)),
        FakePullContext(
            changed_files_value=[ChangedFile(evil)],
            file_blobs_value={OLD: {evil: "x"}, HEAD: {evil: "y"}},
        ).approve("alice", commit=OLD),
        now=T0,
    )
    md = render_markdown(result)
    assert "[click](" not in md and "<img>" not in md and "[a](b)" not in md
    assert r"plans/x\|\[click\]\(https://evil.example\)\<img\>.yaml" in md
    assert r"`r\|\*x\*`" in md


def test_unsafe_review_url_not_linked():
    result = _result("sam")
    node = result.requirements[0]
    bad = replace(node.counted[0], html_url="javascript:alert(1)")
    result = replace(result, requirements=(replace(node, counted=(bad,)), *result.requirements[1:]))
    md = render_markdown(result)
    assert "javascript:" not in md
    assert "@sam (review on `aaaaaaa`)" in md


def test_summary_fits_github_limit():
    ctx = FakePullContext(author_value="author")
    for i in range(3000):
        ctx.review(f"user{i}", "APPROVED", commit="f" * 40)  # all on a vanished commit
    result = evaluate_gate(REQS, ctx, now=T0)
    out = check_run_output(result)
    assert len(out.summary) <= 65_535
    assert out.summary.endswith("run `plangate explain` for the full table)")


def test_text_has_no_markup_or_colour():
    text = render_text(_result("sam", "dora"))
    assert "\x1b[" not in text
    assert text.startswith("SATISFIED: all 2 approval requirements satisfied")
    assert "sre" in text and "@sam (aaaaaaa)" in text
    assert "n/a" in text  # the alternative that was not needed


def test_no_requirements_needed_title():
    result = evaluate_gate(ApprovalRequirements(none_required=True), FakePullContext(), now=T0)
    assert title(result) == "No approval needed"
    blocked = evaluate_gate(ApprovalRequirements(), FakePullContext(), now=T0)
    assert title(blocked) == "Approval blocked"
    assert "failing closed" in render_markdown(blocked)


def test_carried_over_approval_marked():
    ctx = FakePullContext(
        changed_files_value=[ChangedFile("plans/db.yaml")],
        file_blobs_value={OLD: {"plans/db.yaml": "x"}, HEAD: {"plans/db.yaml": "x"}},
    ).approve("sam", commit=OLD)
    md = render_markdown(evaluate_gate(REQS, ctx, now=T0))
    assert "@sam ([review](" in md and "on `bbbbbbb, carried over`)" in md


def test_gate_to_dict_is_json():
    import json

    from app.approvals.render import gate_to_dict

    ctx = FakePullContext().approve("sam", "dora", "author")
    ctx.review("x", "CHANGES_REQUESTED")
    data = json.loads(json.dumps(gate_to_dict(evaluate_gate(REQS, ctx, now=T0))))
    assert data["status"] == "rejected" and data["satisfied"] is False
    assert data["head_sha"] == HEAD
    assert data["requirements"][0]["counted"][0]["login"] == "sam"
    assert data["ignored"][0]["code"] == "author"
    assert data["rejections"][0]["login"] == "x"
