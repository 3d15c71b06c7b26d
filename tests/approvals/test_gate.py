"""The approval gate's rules, one named test per security invariant (docs/approvals.md)."""

from __future__ import annotations

import pytest
from approval_fakes import BASE, HEAD, OLD, OLDER, T0, FakePullContext, sha

from app.approvals.context import ChangedFile, Commit, PullContext
from app.approvals.gate import GateOptions, GateResult, evaluate_gate, simulate_gate
from app.errors import GitHubError, GitHubUnavailable, RateLimited
from app.policy.requirements import AnyOf, ApprovalRequirements, Requirement

ONE = ApprovalRequirements(all_of=(Requirement(id="review", count=1),))
TWO = ApprovalRequirements(all_of=(Requirement(id="review", count=2),))


def judge(reqs: ApprovalRequirements, ctx: PullContext, **kw) -> GateResult:
    return evaluate_gate(reqs, ctx, now=T0, **kw)


def ignored_codes(result: GateResult) -> dict[str, str]:
    return {i.login: i.code for i in result.ignored}


def counted(result: GateResult) -> list[str]:
    return [a.login for a in result.approvals()]


def test_fake_is_a_pull_context():
    assert isinstance(FakePullContext(), PullContext)


def test_single_approval_on_head_satisfies():
    result = judge(ONE, FakePullContext().approve("alice"))
    assert result.status == "satisfied"
    assert result.satisfied
    (approval,) = result.approvals()
    assert (approval.login, approval.commit_id, approval.requirement) == ("alice", HEAD, "review")
    assert approval.review_id == 100
    assert approval.html_url.endswith("#pullrequestreview-100")
    assert result.head_sha == HEAD and result.base_sha == BASE
    assert result.evaluated_at == T0


def test_no_reviews_is_pending():
    result = judge(ONE, FakePullContext())
    assert result.status == "pending"
    assert not result.satisfied
    assert result.approvals() == ()
    assert "1 approval from anyone with write access" in result.requirements[0].still_needed


# -- latest review wins -----------------------------------------------------------------------


def test_latest_review_wins():
    ctx = FakePullContext()
    ctx.review("alice", "APPROVED")
    ctx.review("alice", "CHANGES_REQUESTED")
    result = judge(ONE, ctx)
    assert result.status == "rejected"
    assert counted(result) == []
    assert "superseded by changes requested" in result.ignored[0].reason

    ctx.review("alice", "APPROVED")
    assert judge(ONE, ctx).status == "satisfied"


def test_latest_review_wins_by_time_not_list_order():
    ctx = FakePullContext()
    ctx.review("alice", "CHANGES_REQUESTED", minutes=10)
    ctx.review("alice", "APPROVED", minutes=5)  # listed later, submitted earlier
    assert judge(ONE, ctx).status == "rejected"


def test_comment_does_not_cancel_approval():
    ctx = FakePullContext()
    ctx.review("alice", "APPROVED")
    ctx.review("alice", "COMMENTED")
    assert judge(ONE, ctx).status == "satisfied"


def test_pending_draft_review_ignored():
    ctx = FakePullContext()
    ctx.review("alice", "APPROVED")
    from dataclasses import replace

    ctx.reviews_value.append(
        replace(ctx.reviews_value[0], id=999, state="PENDING", submitted_at=None)
    )
    assert judge(ONE, ctx).status == "satisfied"


def test_dismissed_approval_removed():
    ctx = FakePullContext()
    ctx.review("alice", "DISMISSED")  # GitHub rewrites a dismissed approval's state
    result = judge(ONE, ctx)
    assert result.status == "pending"
    assert ignored_codes(result) == {"alice": "dismissed"}
    assert "was dismissed" in result.ignored[0].reason


def test_dismissed_review_after_approval_cancels_it():
    ctx = FakePullContext()
    ctx.review("alice", "APPROVED")
    ctx.review("alice", "DISMISSED")
    result = judge(ONE, ctx)
    assert result.status == "pending"
    assert {i.code for i in result.ignored} == {"superseded", "dismissed"}


# -- who never counts -------------------------------------------------------------------------


def test_author_approval_never_counts():
    ctx = FakePullContext(author_value="Mallory").approve("mallory")  # logins are case-insensitive
    result = judge(ONE, ctx)
    assert result.status == "pending"
    assert ignored_codes(result) == {"mallory": "author"}
    assert "opened the PR" in result.ignored[0].reason
    # even when named explicitly by the policy
    named = ApprovalRequirements(all_of=(Requirement(id="r", users=("mallory",)),))
    assert judge(named, ctx).status == "pending"
    assert judge(named, ctx).requirements[0].candidates == ()


@pytest.mark.parametrize("role", ["author", "committer", "pushed_by", "co_authors"])
def test_committer_reviewer_never_counts(role: str):
    commit = Commit(sha=OLD, author="author", committer="author")
    value: object = ("carol",) if role == "co_authors" else "carol"
    from dataclasses import replace

    ctx = FakePullContext(
        commits_value=[
            commit,
            replace(Commit(sha=HEAD, author="author", committer="web-flow"), **{role: value}),
        ]
    ).approve("carol")
    result = judge(ONE, ctx)
    assert result.status == "pending"
    assert ignored_codes(result) == {"carol": "contributor"}
    assert "in this PR" in result.ignored[0].reason
    assert "aaaaaaa" in result.ignored[0].reason


def test_excluded_login_never_counts():
    reqs = ApprovalRequirements(
        all_of=(Requirement(id="review"),), excluded={"oncall": "@oncall is on call this week"}
    )
    result = judge(reqs, FakePullContext().approve("OnCall"))
    assert result.status == "pending"
    assert ignored_codes(result) == {"OnCall": "excluded"}
    assert "on call this week" in result.ignored[0].reason


def test_reader_approval_never_counts():
    ctx = FakePullContext(permission_value={"rita": "read", "tom": "triage", "nobody": None})
    ctx.approve("rita", "tom", "nobody")
    result = judge(ONE, ctx)
    assert result.status == "pending"
    assert ignored_codes(result) == {
        "rita": "permission",
        "tom": "permission",
        "nobody": "permission",
    }
    assert "has read access, needs write or more" in result.ignored[0].reason
    assert "has no access" in result.ignored[2].reason


def test_min_permission_from_requirement():
    reqs = ApprovalRequirements(all_of=(Requirement(id="admins", min_permission="admin"),))
    ctx = FakePullContext(permission_value={"ada": "admin"}).approve("wes")
    assert judge(reqs, ctx).status == "pending"
    ctx.approve("ada")
    assert counted(judge(reqs, ctx)) == ["ada"]


def test_unlisted_user_does_not_count():
    reqs = ApprovalRequirements(all_of=(Requirement(id="dba", users=("dora",)),))
    result = judge(reqs, FakePullContext().approve("eve"))
    assert result.status == "pending"
    assert ignored_codes(result) == {"eve": "not_eligible"}


# -- content-bound staleness ------------------------------------------------------------------


def _two_commit_ctx(old_blob: str, *, other_old: str = "o1", other_head: str = "o1"):
    return FakePullContext(
        changed_files_value=[ChangedFile("plans/db.yaml"), ChangedFile("README.md")],
        file_blobs_value={
            OLD: {"plans/db.yaml": old_blob, "README.md": other_old},
            HEAD: {"plans/db.yaml": "blob-new", "README.md": other_head},
        },
    ).approve("alice", commit=OLD)


def test_stale_approval_dropped_when_plan_changes():
    result = judge(ONE, _two_commit_ctx("blob-old"))
    assert result.status == "pending"
    (ignored,) = result.ignored
    assert ignored.code == "stale"
    assert ignored.reason == (
        "approval by @alice on bbbbbbb no longer counts: plans/db.yaml changed since"
    )


def test_stale_approval_dropped_when_any_other_file_changes():
    result = judge(ONE, _two_commit_ctx("blob-new", other_old="o1", other_head="o2"))
    assert result.status == "pending"
    assert "README.md changed since" in result.ignored[0].reason


def test_approval_kept_across_noop_rebase():
    # the rebase produced a new head commit, but every file the PR changes is byte-identical
    result = judge(ONE, _two_commit_ctx("blob-new"))
    assert result.status == "satisfied"
    (approval,) = result.approvals()
    assert approval.commit_id == OLD and approval.on_head is False


def test_rename_compares_old_path_too():
    ctx = FakePullContext(
        changed_files_value=[ChangedFile("plans/b.yaml", "renamed", "plans/a.yaml")],
        file_blobs_value={
            OLD: {"plans/b.yaml": "x", "plans/a.yaml": "gone?"},
            HEAD: {"plans/b.yaml": "x", "plans/a.yaml": None},
        },
    ).approve("alice", commit=OLD)
    result = judge(ONE, ctx)
    assert result.status == "pending"
    assert "plans/a.yaml changed since" in result.ignored[0].reason


def test_approval_on_vanished_commit_dropped():
    ctx = FakePullContext().approve("alice", commit=OLDER)  # fake: unknown commit -> 404
    result = judge(ONE, ctx)
    assert result.status == "pending"
    assert ignored_codes(result) == {"alice": "unknown_commit"}
    assert result.errors == ()  # a vanished commit is not an outage


def test_stale_check_fails_closed_without_changed_files():
    ctx = FakePullContext(changed_files_value=[]).approve("alice", commit=OLD)
    assert judge(ONE, ctx).status == "pending"


def test_strict_head_only_option_drops_carried_approval():
    ctx = _two_commit_ctx("blob-new")
    assert judge(ONE, ctx).satisfied
    strict = judge(ONE, ctx, options=GateOptions(require_head_sha=True))
    assert strict.status == "pending"
    assert "must be given on the head aaaaaaa" in strict.ignored[0].reason


def test_strict_unlinked_commits_option_blocks():
    ctx = FakePullContext(commits_value=[Commit(sha=HEAD, author=None, committer="author")])
    ctx.approve("alice")
    assert judge(ONE, ctx).satisfied
    strict = judge(ONE, ctx, options=GateOptions(block_unlinked_commits=True))
    assert strict.status == "pending"
    assert "not linked to a GitHub account" in strict.reason


# -- distinct approvers, teams, any_of --------------------------------------------------------

SRE = Requirement(id="sre", teams=("sre",))
DBA = Requirement(id="dba", teams=("dba",))
TEAMS = {"sre": ("sam", "both"), "dba": ("dora", "both")}


def test_distinct_approvers():
    reqs = ApprovalRequirements(all_of=(SRE, DBA), team_members=TEAMS)
    result = judge(reqs, FakePullContext().approve("both"))
    assert result.status == "pending"
    assert sum(n.satisfied for n in result.requirements) == 1
    # without distinct_approvers one person may satisfy both
    lax = reqs.model_copy(update={"distinct_approvers": False})
    assert judge(lax, FakePullContext().approve("both")).satisfied


def test_distinct_approvers_finds_assignment_regardless_of_order():
    # greedy would give "both" to sre and leave dba unsatisfiable; the search must not
    reqs = ApprovalRequirements(all_of=(SRE, DBA), team_members=TEAMS)
    result = judge(reqs, FakePullContext().approve("both", "sam"))
    assert result.satisfied
    assert {(a.login, a.requirement) for a in result.approvals()} == {
        ("sam", "sre"),
        ("both", "dba"),
    }


def test_dual_authorization_needs_two_teams():
    dual = Requirement(id="dual", count=2, teams=("sre", "dba"), distinct_teams=2)
    reqs = ApprovalRequirements(
        all_of=(dual,), team_members={"sre": ("sam", "sue"), "dba": ("dora",)}
    )
    same_team = judge(reqs, FakePullContext().approve("sam", "sue"))
    assert same_team.status == "pending"
    assert "more of the teams sre, dba" in same_team.requirements[0].still_needed
    assert judge(reqs, FakePullContext().approve("sam", "dora")).satisfied


def test_dual_authorization_member_of_both_teams_represents_one():
    dual = Requirement(id="dual", count=2, teams=("sre", "dba"), distinct_teams=2)
    reqs = ApprovalRequirements(all_of=(dual,), team_members=TEAMS)
    assert judge(reqs, FakePullContext().approve("both", "sam")).satisfied
    reqs1 = ApprovalRequirements(
        all_of=(dual,), team_members={"sre": ("both", "sam"), "dba": ("both",)}
    )
    assert judge(reqs1, FakePullContext().approve("both", "sam")).satisfied
    reqs2 = ApprovalRequirements(all_of=(dual,), team_members={"sre": ("sam", "sue"), "dba": ()})
    assert not judge(reqs2, FakePullContext().approve("sue", "sam")).satisfied


def test_github_team_slugs_resolved_through_context():
    reqs = ApprovalRequirements(all_of=(SRE,), team_slugs={"sre": ("acme/sre",)})
    ctx = FakePullContext(team_members_value={"acme/sre": frozenset({"Sam"})}).approve("sam")
    assert judge(reqs, ctx).satisfied


def test_unknown_team_nobody_can_satisfy():
    reqs = ApprovalRequirements(all_of=(Requirement(id="ghost", teams=("nope",)),))
    result = judge(reqs, FakePullContext().approve("alice"))
    assert result.status == "pending"
    assert result.requirements[0].reason.startswith("nobody can satisfy")


def test_any_of_one_alternative_suffices():
    reqs = ApprovalRequirements(
        all_of=(AnyOf(id="owner-or-two", any_of=(DBA, Requirement(id="two", count=2))),),
        team_members=TEAMS,
    )
    assert judge(reqs, FakePullContext().approve("dora")).satisfied
    assert judge(reqs, FakePullContext().approve("x", "y")).satisfied
    result = judge(reqs, FakePullContext().approve("x"))
    assert result.status == "pending"
    assert result.requirements[0].still_needed.startswith("one of: dba:")
    assert [c.id for c in result.requirements[0].children] == ["dba", "two"]
    satisfied = judge(reqs, FakePullContext().approve("dora"))
    assert [a.requirement for a in satisfied.approvals()] == ["dba"]


def test_approvals_only_lists_counted_people():
    result = judge(ONE, FakePullContext().approve("alice", "bob"))
    assert counted(result) == ["alice"]


# -- fail closed ------------------------------------------------------------------------------


def test_empty_requirements_fail_closed():
    result = judge(ApprovalRequirements(), FakePullContext().approve("alice"))
    assert result.status == "pending"
    assert not result.satisfied
    assert "no approval requirements" in result.reason
    explicit = judge(ApprovalRequirements(none_required=True), FakePullContext())
    assert explicit.satisfied


@pytest.mark.parametrize(
    "method",
    ["author", "head_sha", "base_ref", "base_sha", "commits", "reviews", "permission"],
)
@pytest.mark.parametrize(
    "error",
    [
        GitHubUnavailable("GitHub returned 502", status=502),
        RateLimited("secondary rate limit", retry_after=60),
        RuntimeError("adapter bug"),
    ],
    ids=["unavailable", "rate-limited", "bug"],
)
def test_context_error_never_satisfies(method: str, error: Exception):
    ctx = FakePullContext().approve("alice")
    setattr(ctx, f"{method}_error", error)
    result = judge(ONE, ctx)  # never raises
    assert result.status != "satisfied"
    assert not result.satisfied
    assert result.approvals() == ()
    assert result.errors
    assert str(error).split(":")[0] in result.errors[0].message
    assert len(result.requirements) == 1  # the explanation still renders


@pytest.mark.parametrize("method", ["changed_files", "file_blobs"])
def test_staleness_lookup_error_never_satisfies(method: str):
    ctx = _two_commit_ctx("blob-new")
    setattr(ctx, f"{method}_error", GitHubUnavailable("GitHub returned 503", status=503))
    result = judge(ONE, ctx)
    assert not result.satisfied
    assert result.errors


def test_blob_lookup_server_error_is_an_error_not_a_vanished_commit():
    ctx = _two_commit_ctx("blob-new")

    def failing(commit, paths):
        if commit == OLD:
            raise GitHubError("boom", status=500)
        return {"plans/db.yaml": "blob-new", "README.md": "o1"}

    ctx.file_blobs = failing  # type: ignore[method-assign]
    result = judge(ONE, ctx)
    assert not result.satisfied
    assert result.errors[0].message == "boom"


def test_team_lookup_error_never_satisfies():
    reqs = ApprovalRequirements(all_of=(SRE,), team_slugs={"sre": ("acme/sre",)})
    ctx = FakePullContext(team_members_value={"acme/sre": frozenset({"sam"})}).approve("sam")
    ctx.team_members_error = GitHubUnavailable("down")
    result = judge(reqs, ctx)
    assert not result.satisfied
    assert result.errors[0].operation == "members of team acme/sre"


# -- changes requested ------------------------------------------------------------------------


def test_changes_requested_by_required_reviewer_rejects():
    reqs = ApprovalRequirements(all_of=(DBA,), team_members=TEAMS)
    ctx = FakePullContext().approve("both")
    ctx.review("dora", "CHANGES_REQUESTED")
    result = judge(reqs, ctx)
    assert result.status == "rejected"
    assert [r.login for r in result.rejections] == ["dora"]
    assert result.rejections[0].requirements == ("dba",)
    assert "changes requested by @dora" in result.reason


def test_changes_requested_by_outsider_does_not_block():
    reqs = ApprovalRequirements(all_of=(DBA,), team_members=TEAMS)
    ctx = FakePullContext().approve("dora")
    ctx.review("random", "CHANGES_REQUESTED")
    result = judge(reqs, ctx)
    assert result.satisfied
    assert ignored_codes(result) == {"random": "not_eligible"}


def test_changes_requested_by_reader_does_not_block():
    ctx = FakePullContext(permission_value={"rita": "read"}).approve("alice")
    ctx.review("rita", "CHANGES_REQUESTED")
    assert judge(ONE, ctx).satisfied


def test_dismissed_changes_request_unblocks():
    ctx = FakePullContext().approve("alice")
    ctx.review("bob", "DISMISSED")
    assert judge(ONE, ctx).satisfied


# -- retargeting ------------------------------------------------------------------------------


def test_retarget_reevaluates():
    ctx = FakePullContext().approve("alice")
    main_policy = ONE
    release_policy = ApprovalRequirements(
        all_of=(Requirement(id="release-managers", users=("rm1", "rm2"), count=1),)
    )
    on_main = judge(main_policy, ctx)
    assert on_main.satisfied
    assert (on_main.base_ref, on_main.base_sha) == ("refs/heads/main", BASE)

    # the PR is retargeted to release/1.x: the same reviews, judged under the new base's policy
    ctx.base_ref_value, ctx.base_sha_value = "refs/heads/release/1.x", sha("e")
    assert not on_main.is_current(
        head_sha=HEAD, base_ref=ctx.base_ref_value, base_sha=ctx.base_sha_value
    )
    on_release = judge(release_policy, ctx)
    assert on_release.status == "pending"
    assert on_release.base_ref == "refs/heads/release/1.x"
    assert on_release.is_current(
        head_sha=HEAD, base_ref="refs/heads/release/1.x", base_sha=sha("e")
    )


def test_requirements_from_an_old_base_do_not_pass():
    ctx = FakePullContext(base_sha_value=sha("e")).approve("alice")
    result = judge(ONE, ctx, requirements_base_sha=BASE)
    assert not result.satisfied
    assert "retargeted or moved" in result.reason
    assert judge(ONE, ctx, requirements_base_sha=sha("e")).satisfied


# -- local simulation -------------------------------------------------------------------------


def test_simulate_gate():
    reqs = ApprovalRequirements(all_of=(SRE, DBA), team_members=TEAMS)
    assert simulate_gate(reqs, "author", ["sam", "dora"], now=T0).satisfied
    pending = simulate_gate(reqs, "author", ["sam"], now=T0)
    assert pending.status == "pending"
    assert simulate_gate(reqs, "sam", ["sam", "dora"], now=T0).status == "pending"
    readers = simulate_gate(reqs, "author", ["sam", "dora"], now=T0, permissions={"sam": "read"})
    assert not readers.satisfied
    rejected = simulate_gate(reqs, "a", ["sam", "dora"], now=T0, changes_requested=["both"])
    assert rejected.status == "rejected"


def test_simulate_gate_with_github_team_slugs():
    reqs = ApprovalRequirements(all_of=(SRE,), team_slugs={"sre": ("acme/sre",)})
    assert simulate_gate(reqs, "a", ["sam"], now=T0, teams={"acme/sre": ["sam"]}).satisfied
    assert not simulate_gate(reqs, "a", ["sam"], now=T0).satisfied


def test_author_changes_requested_neither_blocks_nor_counts():
    ctx = FakePullContext().approve("alice")
    ctx.review("author", "CHANGES_REQUESTED")
    result = judge(ONE, ctx)
    assert result.satisfied
    assert ignored_codes(result) == {"author": "author"}


def test_search_budget_exhaustion_never_satisfies():
    # 40 sre approvers, 4 needed from 2 different teams: no combination works, and there are
    # far too many to try; the gate must give up closed, quickly
    dual = Requirement(id="dual", count=4, teams=("sre", "dba"), distinct_teams=2)
    people = tuple(f"sre{i}" for i in range(40))
    reqs = ApprovalRequirements(all_of=(dual,), team_members={"sre": people, "dba": ("dora",)})
    result = judge(reqs, FakePullContext().approve(*people))
    assert not result.satisfied
    assert "too many combinations" in result.reason


def test_bot_approval_never_counts():
    # e.g. a workflow in the PR approving with GITHUB_TOKEN as github-actions[bot]
    ctx = FakePullContext().approve("github-actions[bot]")
    result = judge(ONE, ctx)
    assert result.status == "pending"
    assert ignored_codes(result) == {"github-actions[bot]": "bot"}


def test_permission_404_means_no_access_not_outage():
    ctx = FakePullContext().approve("drive-by", "alice")

    def permission(login):
        if login == "drive-by":
            raise GitHubError("drive-by is not a user", status=404)
        return "write"

    ctx.permission = permission  # type: ignore[method-assign]
    result = judge(ONE, ctx)
    assert result.satisfied
    assert result.errors == ()
    assert counted(result) == ["alice"]


def test_attestation_approvers_only_from_satisfied_gate():
    from app.approvals.gate import to_attestation_approvers

    reqs = ApprovalRequirements(all_of=(SRE, DBA), team_members=TEAMS)
    result = judge(reqs, FakePullContext().approve("both", "sam"))
    approvers = to_attestation_approvers(result)
    assert [(a.login, a.requirement, a.review_id, a.commit) for a in approvers] == [
        ("sam", "sre", 101, HEAD),
        ("both", "dba", 100, HEAD),
    ]
    with pytest.raises(ValueError, match="not satisfied"):
        to_attestation_approvers(judge(reqs, FakePullContext().approve("sam")))


def test_attestation_approver_time_clamped_to_evaluation():
    from datetime import timedelta

    from app.approvals.gate import to_attestation_approvers

    ctx = FakePullContext()
    ctx.review("alice", minutes=5)  # GitHub's clock ahead of ours
    (approver,) = to_attestation_approvers(judge(ONE, ctx))
    assert approver.approved_at == T0
    assert ctx.reviews_value[0].submitted_at == T0 + timedelta(minutes=5)
