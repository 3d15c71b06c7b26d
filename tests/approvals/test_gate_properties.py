"""Property tests of the gate over random pull requests and policies (bounded, no deadline)."""

from __future__ import annotations

import itertools
import random
from dataclasses import replace

from approval_fakes import HEAD, OLD, T0, FakePullContext
from hypothesis import given, settings
from hypothesis import strategies as st

from app.approvals.context import ChangedFile, Commit
from app.approvals.gate import GateOptions, GateResult, evaluate_gate
from app.policy.requirements import AnyOf, ApprovalRequirements, Requirement

PEOPLE = ("p0", "p1", "p2", "p3", "p4", "author")
TEAMS = ("t1", "t2")
SETTINGS = settings(max_examples=100, deadline=None)

requirement = st.builds(
    Requirement,
    id=st.sampled_from(("r1", "r2", "r3")),
    count=st.integers(1, 2),
    users=st.lists(st.sampled_from(PEOPLE), max_size=2, unique=True).map(tuple),
    teams=st.lists(st.sampled_from(TEAMS), max_size=2, unique=True).map(tuple),
    distinct_teams=st.sampled_from((0, 0, 2)),
    min_permission=st.sampled_from(("write", "write", "admin")),
)
entry = st.one_of(
    requirement,
    st.builds(
        AnyOf, id=st.just("any"), any_of=st.lists(requirement, min_size=1, max_size=2).map(tuple)
    ),
)
requirements = st.builds(
    ApprovalRequirements,
    all_of=st.lists(entry, min_size=1, max_size=3).map(tuple),
    distinct_approvers=st.booleans(),
    excluded=st.dictionaries(st.sampled_from(PEOPLE), st.just("separation of duties"), max_size=1),
    team_members=st.fixed_dictionaries(
        {t: st.lists(st.sampled_from(PEOPLE), max_size=3, unique=True).map(tuple) for t in TEAMS}
    ),
)
review = st.tuples(
    st.sampled_from(PEOPLE),
    st.sampled_from(("APPROVED", "APPROVED", "CHANGES_REQUESTED", "COMMENTED", "DISMISSED")),
    st.sampled_from((HEAD, OLD)),
)


@st.composite
def pulls(draw) -> FakePullContext:
    ctx = FakePullContext(
        changed_files_value=[ChangedFile("plans/db.yaml")],
        file_blobs_value={
            HEAD: {"plans/db.yaml": "new"},
            OLD: {"plans/db.yaml": draw(st.sampled_from(("new", "old")))},
        },
        commits_value=[
            Commit(sha=OLD, author="author", committer=draw(st.sampled_from((*PEOPLE, None)))),
            Commit(sha=HEAD, author="author", committer="author"),
        ],
        permission_value=draw(
            st.dictionaries(
                st.sampled_from(PEOPLE), st.sampled_from(("read", "write", "admin", None))
            )
        ),
    )
    for login, state, commit in draw(st.lists(review, max_size=8)):
        ctx.review(login, state, commit=commit)
    return ctx


def _copy(ctx: FakePullContext, **changes) -> FakePullContext:
    return replace(ctx, reviews_value=list(ctx.reviews_value), calls=[], **changes)


def _key(result: GateResult):
    return (result.status, sorted((a.login, a.requirement) for a in result.approvals()))


@SETTINGS
@given(requirements, pulls(), st.sampled_from(list(GateOptions.__dataclass_fields__)))
def test_strict_options_only_tighten(reqs, ctx, switch):
    default = evaluate_gate(reqs, _copy(ctx), now=T0)
    strict = evaluate_gate(reqs, _copy(ctx), now=T0, options=GateOptions(**{switch: True}))
    if strict.satisfied:
        assert default.satisfied


@SETTINGS
@given(requirements, pulls())
def test_counted_approvals_obey_every_rule(reqs, ctx):
    result = evaluate_gate(reqs, ctx, now=T0)
    approvals = result.approvals()
    if not result.satisfied:
        assert approvals == ()
        return
    contributors = {"author"} | {c.committer for c in ctx.commits_value if c.committer}
    latest = {}
    for r in sorted(ctx.reviews_value, key=lambda r: (r.submitted_at, r.id)):
        if r.state != "COMMENTED":
            latest[r.login] = r
    for a in approvals:
        assert a.login not in contributors
        assert a.login not in reqs.excluded
        assert latest[a.login].state == "APPROVED" and latest[a.login].id == a.review_id
        assert ctx.permission_value.get(a.login, "write") in ("write", "admin")
        if a.commit_id != HEAD:
            assert ctx.file_blobs_value[OLD] == ctx.file_blobs_value[HEAD]
    if reqs.distinct_approvers:
        logins = [a.login for a in approvals]
        assert len(logins) == len(set(logins))
    assert not result.rejections


@SETTINGS
@given(requirements, pulls(), st.randoms(use_true_random=False))
def test_review_list_order_does_not_matter(reqs, ctx, rng: random.Random):
    shuffled = _copy(ctx)
    rng.shuffle(shuffled.reviews_value)
    assert _key(evaluate_gate(reqs, ctx, now=T0)) == _key(evaluate_gate(reqs, shuffled, now=T0))


@SETTINGS
@given(requirements, pulls())
def test_author_approval_changes_nothing(reqs, ctx):
    before = evaluate_gate(reqs, _copy(ctx), now=T0)
    with_author = _copy(ctx)
    with_author.review("author", "APPROVED")
    assert _key(evaluate_gate(reqs, with_author, now=T0)) == _key(before)


@SETTINGS
@given(requirements, pulls(), st.sampled_from(("p0", "p1", "p2", "p3", "p4", "new")))
def test_one_more_approval_never_unsatisfies(reqs, ctx, login):
    if any(r.login == login for r in ctx.reviews_value):
        return  # a new approval from someone who never reviewed
    before = evaluate_gate(reqs, _copy(ctx), now=T0)
    more = _copy(ctx)
    more.review(login, "APPROVED")
    if before.satisfied:
        assert evaluate_gate(reqs, more, now=T0).satisfied


def _oracle(reqs: ApprovalRequirements, approvers: list[str]) -> bool:
    """Brute force: is there any assignment of approvers satisfying every entry?"""
    members = {t: set(m) for t, m in reqs.team_members.items()}

    def leaf_sets(req: Requirement) -> list[frozenset[str]]:
        def eligible(p: str) -> bool:
            if not req.users and not req.teams:
                return True
            return p in req.users or any(p in members.get(t, ()) for t in req.teams)

        pool = [p for p in approvers if eligible(p)]
        found = []
        for combo in itertools.combinations(pool, req.count):
            if req.distinct_teams > 1:
                choices = [
                    [t for t in req.teams if p in members.get(t, ())] or [None] for p in combo
                ]
                if not any(
                    len({t for t in pick if t}) >= req.distinct_teams
                    for pick in itertools.product(*choices)
                ):
                    continue
            found.append(frozenset(combo))
        return found

    options = []
    for node in reqs.all_of:
        leaves = [node] if isinstance(node, Requirement) else list(node.any_of)
        options.append([s for leaf in leaves for s in leaf_sets(leaf)])

    def search(i: int, used: frozenset[str]) -> bool:
        if i == len(options):
            return True
        for chosen in options[i]:
            if reqs.distinct_approvers and chosen & used:
                continue
            if search(i + 1, used | chosen):
                return True
        return False

    return search(0, frozenset())


@SETTINGS
@given(requirements, st.lists(st.sampled_from(PEOPLE[:-1]), max_size=5, unique=True))
def test_assignment_found_whenever_one_exists(reqs, approvers):
    reqs = reqs.model_copy(update={"excluded": {}})
    ctx = FakePullContext(default_permission="admin").approve(*approvers)  # oracle: no perms
    result = evaluate_gate(reqs, ctx, now=T0)
    assert result.satisfied == _oracle(reqs, approvers)
