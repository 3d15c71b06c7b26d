"""The approval gate: which reviews count, and are the policy's approval requirements met?

Pure core. Inputs are the requirements the *base branch's* policy assigns to the plans of a pull
request (``app.policy.requirements``), the pull request seen through the narrow
``PullContext`` port, and ``now``. Output is a ``GateResult`` value: a status, a human reason
and a tree with one node per requirement (who can satisfy it, who counted, who is still needed)
plus every review that did not count and why. Check runs and the CLI only format it
(``app.approvals.render``).

What it must not do: read policy files, talk to GitHub, read the clock, or raise on a context
failure. A failing context call is recorded on the result (``errors``) and the result is then
never ``satisfied``, so an outage can never be mistaken for a pass (fail closed).

Rules (docs/approvals.md has examples):

1. Only each reviewer's latest *deciding* review counts: ``APPROVED``, ``CHANGES_REQUESTED`` or
   ``DISMISSED``, ordered by ``submitted_at`` then review id. ``COMMENTED`` does not cancel an
   earlier approval (GitHub's own rule; a comment is not a change of mind).
2. The PR author never counts, nor anyone who authored, committed, co-authored or pushed a
   commit of the PR, nor an App's bot account. ``GateOptions`` can only make this stricter.
3. Content-bound staleness: an approval given on an earlier commit counts only if every file the
   PR changes has the same git blob SHA at that commit and at the head. A no-op rebase or a base
   merge keeps approvals; any change to any file of the PR drops them.
4. ``excluded`` logins (separation of duties) never count.
5. Approvers need at least the requirement's ``min_permission`` on the repository.
6. With ``distinct_approvers`` one person satisfies at most one requirement; an exhaustive
   search (requirements are few) finds an assignment that satisfies all if one exists.
   ``distinct_teams`` > 1 needs counted approvers from that many different teams.
7. A ``CHANGES_REQUESTED`` from someone who could satisfy a requirement makes the status
   ``rejected`` until they approve or the review is dismissed (even if others approved).
8. No requirements means *not satisfied* unless the policy explicitly said ``none_required``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, TypeVar

from app.approvals.attest import Approver
from app.approvals.context import (
    LOCAL_HEAD_SHA,
    ChangedFile,
    Commit,
    LocalPullContext,
    PullContext,
    Review,
)
from app.errors import GitHubError, PlangateError
from app.policy.requirements import (
    PERMISSION_ORDER,
    AnyOf,
    ApprovalRequirements,
    Permission,
    Requirement,
)

__all__ = [
    "CountedApproval",
    "GateError",
    "GateOptions",
    "GateResult",
    "GateStatus",
    "IgnoredReview",
    "Rejection",
    "RequirementResult",
    "evaluate_gate",
    "short_sha",
    "simulate_gate",
    "to_attestation_approvers",
]

GateStatus = Literal["satisfied", "pending", "rejected"]

#: why a review did not count (stable codes for machines; ``reason`` is for people)
IgnoredCode = Literal[
    "superseded",
    "dismissed",
    "author",
    "bot",
    "contributor",
    "excluded",
    "stale",
    "unknown_commit",
    "permission",
    "not_eligible",
    "error",
]

_DECIDING = frozenset({"APPROVED", "CHANGES_REQUESTED", "DISMISSED"})
#: bound on the assignment search; requirements are few, this is a safety net, not a tuning knob
_SEARCH_BUDGET = 20_000

T = TypeVar("T")


def short_sha(sha: str | None) -> str:
    """The 7-character form people know from GitHub's UI."""
    return (sha or "?")[:7]


@dataclass(frozen=True, slots=True)
class GateOptions:
    """Switches that can only make the gate stricter: no field here can loosen a rule.

    ``require_head_sha``: approvals must be given on the head commit itself (no content-bound
    carry-over across rebases). ``block_unlinked_commits``: if a commit's author or committer
    is not linked to a GitHub account, the gate cannot tell whether a reviewer wrote it, so it
    stays pending until someone re-commits with a linked identity.
    """

    require_head_sha: bool = False
    block_unlinked_commits: bool = False


@dataclass(frozen=True, slots=True)
class CountedApproval:
    """An approval that counts toward ``requirement`` (the attestation's ``approvers`` entry)."""

    login: str
    review_id: int
    commit_id: str
    submitted_at: datetime | None
    html_url: str
    requirement: str
    on_head: bool


@dataclass(frozen=True, slots=True)
class IgnoredReview:
    """A review that does not count (or no longer counts), with a reason a person understands."""

    login: str
    review_id: int
    commit_id: str
    html_url: str
    state: str
    code: IgnoredCode
    reason: str


@dataclass(frozen=True, slots=True)
class Rejection:
    """A ``CHANGES_REQUESTED`` review from someone who could satisfy ``requirements``."""

    login: str
    review_id: int
    commit_id: str
    html_url: str
    requirements: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class GateError:
    """A context call that failed; the result carrying it is never satisfied."""

    operation: str
    message: str
    hint: str


@dataclass(frozen=True, slots=True)
class RequirementResult:
    """One node of the result tree: a requirement, or an ``any_of`` with its alternatives.

    ``who_can`` is the policy's answer to "who can satisfy this" in words; ``candidates`` the
    logins known to be able to (team members resolved; the author, contributors and excluded
    people removed; permission not checked). ``counted`` are approvals that count for it; on an
    unsatisfied requirement they show progress. ``still_needed`` is empty once satisfied.
    """

    id: str
    kind: Literal["requirement", "any_of"]
    satisfied: bool
    needed: int
    who_can: str
    candidates: tuple[str, ...]
    counted: tuple[CountedApproval, ...]
    still_needed: str
    reason: str
    description: str = ""
    source: str = ""
    children: tuple[RequirementResult, ...] = ()

    def approvals(self) -> tuple[CountedApproval, ...]:
        """Approvals that satisfy this node (only the satisfied alternative of an ``any_of``)."""
        if not self.satisfied:
            return ()
        if self.kind == "requirement":
            return self.counted
        chosen = next(c for c in self.children if c.satisfied)
        return chosen.approvals()


@dataclass(frozen=True)
class GateResult:
    """The gate's decision for one pull request head against one base.

    ``head_sha``/``base_ref``/``base_sha`` say what was judged: a caller that later sees a
    different head or base (a push, a retarget) must evaluate again (``is_current``).
    ``errors`` are failed context calls; ``blockers`` are gate-level reasons that keep the
    status from ``satisfied`` (no requirements, base moved, strict options).
    """

    status: GateStatus
    reason: str
    evaluated_at: datetime
    author: str | None
    head_sha: str | None
    base_ref: str | None
    base_sha: str | None
    requirements: tuple[RequirementResult, ...] = ()
    ignored: tuple[IgnoredReview, ...] = ()
    rejections: tuple[Rejection, ...] = ()
    errors: tuple[GateError, ...] = ()
    blockers: tuple[str, ...] = ()

    @property
    def satisfied(self) -> bool:
        return self.status == "satisfied" and not self.errors and not self.blockers

    def approvals(self) -> tuple[CountedApproval, ...]:
        """The approvals that satisfied the requirements (empty unless ``satisfied``)."""
        if not self.satisfied:
            return ()
        return tuple(a for node in self.requirements for a in node.approvals())

    def is_current(self, *, head_sha: str, base_ref: str, base_sha: str) -> bool:
        """False when the PR moved or was retargeted since: the caller must evaluate again."""
        return (self.head_sha, self.base_ref, self.base_sha) == (head_sha, base_ref, base_sha)


# --------------------------------------------------------------------------------------------
# evaluation


@dataclass
class _Approval:
    review: Review
    on_head: bool

    @property
    def login(self) -> str:
        return self.review.login

    @property
    def key(self) -> str:
        return self.review.login.lower()


@dataclass
class _Eval:
    reqs: ApprovalRequirements
    ctx: PullContext
    options: GateOptions
    errors: list[GateError] = field(default_factory=list)
    ignored: list[IgnoredReview] = field(default_factory=list)
    blockers: list[str] = field(default_factory=list)
    _perm_cache: dict[str, tuple[bool, Permission | None]] = field(default_factory=dict)
    _team_cache: dict[str, frozenset[str]] = field(default_factory=dict)

    # -- port calls: every failure is recorded, never raised --------------------------------

    def call(self, operation: str, fn: Callable[[], T]) -> tuple[bool, T | None]:
        try:
            return True, fn()
        except PlangateError as exc:
            self.errors.append(GateError(operation, exc.message, exc.hint))
        except Exception as exc:
            # The port is the edge of the pure core: whatever an adapter lets escape is recorded
            # as a failure of this evaluation (fail closed), never propagated as if it were a
            # decision, and never swallowed silently.
            self.errors.append(
                GateError(
                    operation,
                    f"{type(exc).__name__}: {exc}",
                    "this is a bug in the pull request adapter; the gate stays closed",
                )
            )
        return False, None

    def permission(self, login: str) -> tuple[bool, Permission | None]:
        key = login.lower()

        def lookup() -> Permission | None:
            try:
                return self.ctx.permission(login)
            except GitHubError as exc:
                # 404: not a user of this repository (e.g. an App's bot account): no access,
                # not an outage; otherwise one drive-by review could wedge the gate
                if exc.status == 404:
                    return None
                raise

        if key not in self._perm_cache:
            ok, perm = self.call(f"permission of @{login}", lookup)
            self._perm_cache[key] = (ok, perm)
        return self._perm_cache[key]

    def team(self, name: str) -> frozenset[str]:
        """Members (lowercase logins) of a *policy* team: listed logins plus its GitHub teams."""
        if name not in self._team_cache:
            members = {m.lower() for m in self.reqs.team_members.get(name, ())}
            for slug in self.reqs.team_slugs.get(name, ()):
                ok, got = self.call(
                    f"members of team {slug}", lambda s=slug: self.ctx.team_members(s)
                )
                if ok and got is not None:
                    members |= {m.lower() for m in got}
            self._team_cache[name] = frozenset(members)
        return self._team_cache[name]

    def ignore(self, review: Review, code: IgnoredCode, reason: str) -> None:
        self.ignored.append(
            IgnoredReview(
                login=review.login,
                review_id=review.id,
                commit_id=review.commit_id,
                html_url=review.html_url,
                state=review.state,
                code=code,
                reason=reason,
            )
        )


def _order(review: Review) -> tuple[datetime | None, int]:
    return (review.submitted_at, review.id)


def _latest_reviews(ev: _Eval, reviews: Sequence[Review]) -> dict[str, Review]:
    """Each reviewer's latest deciding review. Superseded approvals are reported, not counted."""
    deciding = sorted(
        (r for r in reviews if r.state in _DECIDING and r.submitted_at is not None), key=_order
    )
    latest: dict[str, Review] = {}
    for review in deciding:
        latest[review.login.lower()] = review
    for review in deciding:
        last = latest[review.login.lower()]
        if review.state == "APPROVED" and last is not review:
            what = {
                "APPROVED": "a later approval",
                "CHANGES_REQUESTED": "changes requested",
                "DISMISSED": "a dismissed review",
            }[last.state]
            if last.state == "APPROVED":
                continue  # the later approval speaks for them; listing the older one is noise
            ev.ignore(
                review,
                "superseded",
                f"approval by @{review.login} on {short_sha(review.commit_id)} was superseded by "
                f"{what} on {short_sha(last.commit_id)}",
            )
    for review in latest.values():
        if review.state == "DISMISSED":
            ev.ignore(
                review,
                "dismissed",
                f"review by @{review.login} on {short_sha(review.commit_id)} was dismissed",
            )
    return latest


def _contributors(ev: _Eval, commits: Sequence[Commit]) -> dict[str, str]:
    """lowercase login -> why they are a contributor ("committed 1a2b3c4")."""
    found: dict[str, str] = {}
    unlinked: list[str] = []
    for commit in commits:
        roles = (
            ("authored", commit.author),
            ("committed", commit.committer),
            ("pushed", commit.pushed_by),
            *(("co-authored", login) for login in commit.co_authors),
        )
        for verb, login in roles:
            if login:
                found.setdefault(login.lower(), f"{verb} {short_sha(commit.sha)}")
        if commit.author is None or commit.committer is None:
            unlinked.append(short_sha(commit.sha))
    if unlinked and ev.options.block_unlinked_commits:
        ev.blockers.append(
            "commit(s) "
            + ", ".join(unlinked)
            + " have an author or committer not linked to a GitHub account, so the gate cannot "
            "tell whether a reviewer wrote them (block_unlinked_commits is on)"
        )
    return found


def _describe_changes(paths: list[str]) -> str:
    shown = ", ".join(paths[:3])
    if len(paths) > 3:
        shown += f" and {len(paths) - 3} more"
    return f"{shown} changed since"


def _valid_approvals(
    ev: _Eval,
    latest: Mapping[str, Review],
    *,
    author: str | None,
    head: str | None,
    contributors: Mapping[str, str] | None,
) -> list[_Approval]:
    """Approvals that survive the person-independent rules (author, contributor, staleness)."""
    approvals = sorted((r for r in latest.values() if r.state == "APPROVED"), key=_order)
    excluded = {k.lower(): v for k, v in ev.reqs.excluded.items()}
    survivors: list[Review] = []
    for review in approvals:
        key = review.login.lower()
        on = f"approval by @{review.login} on {short_sha(review.commit_id)}"
        if author is None:
            ev.ignore(review, "error", f"{on} cannot be checked: the PR author is unknown")
        elif key == author.lower():
            ev.ignore(review, "author", f"{on} does not count: @{review.login} opened the PR")
        elif key.endswith("[bot]"):
            # an App's approval is not a person's: e.g. github-actions[bot] approving from a
            # workflow the PR author controls
            ev.ignore(
                review, "bot", f"{on} does not count: @{review.login} is an app, not a person"
            )
        elif contributors is None:
            ev.ignore(
                review,
                "error",
                f"{on} cannot be checked: the PR's commits could not be listed",
            )
        elif key in contributors:
            ev.ignore(
                review,
                "contributor",
                f"{on} does not count: @{review.login} {contributors[key]} in this PR",
            )
        elif key in excluded:
            ev.ignore(review, "excluded", f"{on} does not count: {excluded[key]}")
        else:
            survivors.append(review)

    result: list[_Approval] = []
    earlier = [r for r in survivors if r.commit_id != head]
    stale_checker = _StalenessChecker(ev, head) if earlier and head else None
    for review in survivors:
        on = f"approval by @{review.login} on {short_sha(review.commit_id)}"
        if head is None:
            ev.ignore(review, "error", f"{on} cannot be checked: the PR head is unknown")
            continue
        if review.commit_id == head:
            result.append(_Approval(review, on_head=True))
            continue
        if ev.options.require_head_sha:
            ev.ignore(
                review,
                "stale",
                f"{on} no longer counts: approvals must be given on the head {short_sha(head)}",
            )
            continue
        assert stale_checker is not None
        verdict = stale_checker.check(review.commit_id)
        if verdict is None:
            result.append(_Approval(review, on_head=False))
        else:
            code, why = verdict
            ev.ignore(review, code, f"{on} no longer counts: {why}")
    return result


class _StalenessChecker:
    """Compares blob SHAs of the PR's changed files between a review's commit and the head."""

    def __init__(self, ev: _Eval, head: str) -> None:
        self.ev = ev
        self.head = head
        ok, files = ev.call("changed files", ev.ctx.changed_files)
        self.paths: list[str] | None = (
            sorted({p for f in files or () for p in ChangedFile.paths(f)}) if ok else None
        )
        self.head_blobs: Mapping[str, str | None] | None = None
        if self.paths:
            ok, blobs = ev.call(
                f"file contents at {short_sha(head)}",
                lambda: ev.ctx.file_blobs(head, self.paths or []),
            )
            self.head_blobs = blobs if ok else None
        self.cache: dict[str, tuple[IgnoredCode, str] | None] = {}

    def check(self, commit: str) -> tuple[IgnoredCode, str] | None:
        """None if the approval still counts, else (code, reason)."""
        if commit not in self.cache:
            self.cache[commit] = self._check(commit)
        return self.cache[commit]

    def _check(self, commit: str) -> tuple[IgnoredCode, str] | None:
        if self.paths is None:
            return "error", "the PR's changed files could not be listed to compare contents"
        if not self.paths:
            return "stale", "the PR lists no changed files, so unchanged content cannot be shown"
        if self.head_blobs is None:
            return "error", f"file contents at the head {short_sha(self.head)} could not be read"
        try:
            blobs = self.ev.ctx.file_blobs(commit, self.paths)
        except GitHubError as exc:
            if exc.status == 404:
                return "unknown_commit", f"commit {short_sha(commit)} no longer exists"
            self.ev.errors.append(
                GateError(f"file contents at {short_sha(commit)}", exc.message, exc.hint)
            )
            return "error", f"file contents at {short_sha(commit)} could not be read"
        except Exception as exc:  # see _Eval.call: the port's edge, recorded and fail closed
            self.ev.errors.append(
                GateError(
                    f"file contents at {short_sha(commit)}",
                    f"{type(exc).__name__}: {exc}",
                    "this is a bug in the pull request adapter; the gate stays closed",
                )
            )
            return "error", f"file contents at {short_sha(commit)} could not be read"
        head_blobs = self.head_blobs
        changed = [
            p
            for p in self.paths
            # a path the adapter did not answer for counts as changed (fail closed)
            if p not in blobs or p not in head_blobs or blobs[p] != head_blobs[p]
        ]
        if changed:
            return "stale", _describe_changes(changed)
        return None


# -- requirement matching ---------------------------------------------------------------------


def _perm_ok(perm: Permission | None, needed: Permission) -> bool:
    return perm is not None and PERMISSION_ORDER.index(perm) >= PERMISSION_ORDER.index(needed)


@dataclass
class _Leaf:
    req: Requirement
    eligible: list[_Approval]
    #: approver key -> policy teams (of req.teams) they belong to
    teams_of: dict[str, frozenset[str]]
    candidates: tuple[str, ...]
    who_can: str


def _matches(ev: _Eval, req: Requirement, key: str) -> tuple[bool, frozenset[str]]:
    teams = frozenset(t for t in req.teams if key in ev.team(t))
    if not req.users and not req.teams:
        return True, teams
    return (key in {u.lower() for u in req.users} or bool(teams)), teams


def _who_can(req: Requirement) -> str:
    parts = [f"@{u}" for u in req.users] + [f"team {t}" for t in req.teams]
    who = (
        "anyone"
        if not parts
        else ", ".join(parts[:-1]) + (" or " if parts[:-1] else "") + parts[-1]
    )
    text = f"{who} with {req.min_permission} access"
    if req.distinct_teams > 1:
        text += f", from {req.distinct_teams} different teams"
    return text


def _leaf(ev: _Eval, req: Requirement, approvals: list[_Approval], not_counting: set[str]) -> _Leaf:
    eligible: list[_Approval] = []
    teams_of: dict[str, frozenset[str]] = {}
    for approval in approvals:
        match, teams = _matches(ev, req, approval.key)
        if not match:
            continue
        ok, perm = ev.permission(approval.login)
        if ok and _perm_ok(perm, req.min_permission):
            eligible.append(approval)
            teams_of[approval.key] = teams
    named = {u.lower() for u in req.users}
    for team in req.teams:
        named |= ev.team(team)
    candidates = tuple(sorted(named - not_counting))
    return _Leaf(req, eligible, teams_of, candidates, _who_can(req))


def _teams_covered(leaf: _Leaf, chosen: Sequence[_Approval]) -> int:
    """Maximum number of distinct teams the chosen approvers can represent (one team each)."""
    match: dict[str, str] = {}  # team -> approver key

    def augment(key: str, seen: set[str]) -> bool:
        for team in sorted(leaf.teams_of.get(key, frozenset())):
            if team in seen:
                continue
            seen.add(team)
            if team not in match or augment(match[team], seen):
                match[team] = key
                return True
        return False

    return sum(1 for a in chosen if augment(a.key, set()))


def _leaf_ok(leaf: _Leaf, chosen: Sequence[_Approval]) -> bool:
    if len(chosen) < leaf.req.count:
        return False
    return leaf.req.distinct_teams <= 1 or _teams_covered(leaf, chosen) >= leaf.req.distinct_teams


def _leaf_options(leaf: _Leaf, used: frozenset[str]) -> Iterable[tuple[_Approval, ...]]:
    """Every choice of ``count`` available approvers (checked by the caller, within budget)."""
    pool = [a for a in leaf.eligible if a.key not in used]
    return itertools.combinations(pool, leaf.req.count)


_Entry = tuple[AnyOf | Requirement, list[_Leaf]]
#: per top-level entry: None (unsatisfied) or (alternative index, chosen approvals)
_Choice = tuple[int, tuple[_Approval, ...]] | None


class _Search:
    """Exhaustive search for the assignment that satisfies the most top-level entries.

    With ``distinct_approvers`` a person used for one requirement is unavailable to the others;
    trying every combination is a tiny bipartite matching with side constraints (team
    diversity), cheap because requirements and approvers are few. The budget bounds pathological
    inputs; running out is reported as a blocker, never as a pass.
    """

    def __init__(self, entries: list[_Entry], distinct: bool) -> None:
        self.entries = entries
        self.distinct = distinct
        self.steps = 0
        self.exhausted = False
        self.memo: dict[tuple[int, frozenset[str]], tuple[int, list[_Choice]]] = {}

    def run(self) -> list[_Choice]:
        return self._best(0, frozenset())[1]

    def _best(self, i: int, used: frozenset[str]) -> tuple[int, list[_Choice]]:
        if i == len(self.entries):
            return 0, []
        memo_key = (i, used)
        if memo_key in self.memo:
            return self.memo[memo_key]
        remaining = len(self.entries) - i
        best_score, best_rest = self._best(i + 1, used)
        best: tuple[int, list[_Choice]] = (best_score, [None, *best_rest])
        for alt, leaf in enumerate(self.entries[i][1]):
            for combo in _leaf_options(leaf, used):
                self.steps += 1
                if self.steps > _SEARCH_BUDGET:
                    self.exhausted = True
                    break
                if not _leaf_ok(leaf, combo):
                    continue
                nxt = used | {a.key for a in combo} if self.distinct else used
                score, rest = self._best(i + 1, nxt)
                if score + 1 > best[0]:
                    best = (score + 1, [(alt, combo), *rest])
                if best[0] == remaining:
                    break
            if best[0] == remaining or self.exhausted:
                break
        self.memo[memo_key] = best
        return best


def _counted(approvals: Iterable[_Approval], req_id: str) -> tuple[CountedApproval, ...]:
    return tuple(
        CountedApproval(
            login=a.login,
            review_id=a.review.id,
            commit_id=a.review.commit_id,
            submitted_at=a.review.submitted_at,
            html_url=a.review.html_url,
            requirement=req_id,
            on_head=a.on_head,
        )
        for a in approvals
    )


def _leaf_result(
    leaf: _Leaf, chosen: Sequence[_Approval] | None, used: set[str]
) -> RequirementResult:
    req = leaf.req
    if chosen is not None:
        return RequirementResult(
            id=req.id,
            kind="requirement",
            satisfied=True,
            needed=req.count,
            who_can=leaf.who_can,
            candidates=leaf.candidates,
            counted=_counted(chosen, req.id),
            still_needed="",
            reason=f"approved by {', '.join('@' + a.login for a in chosen)}",
            description=req.description,
            source=req.source,
        )
    # progress for people: the approvals that would count here and are not used elsewhere
    partial = [a for a in leaf.eligible if a.key not in used][: req.count]
    used |= {a.key for a in partial}
    missing = req.count - len(partial)
    still = []
    if missing > 0:
        still.append(
            f"{missing} more approval{'s' if missing > 1 else ''} from {leaf.who_can}"
            if partial
            else f"{missing} approval{'s' if missing > 1 else ''} from {leaf.who_can}"
        )
    if req.distinct_teams > 1 and partial:
        covered = _teams_covered(leaf, partial)
        if covered < req.distinct_teams:
            still.append(
                f"approvers from {req.distinct_teams - covered} more of the teams "
                f"{', '.join(req.teams)} (dual authorization: {req.distinct_teams} different "
                "teams)"
            )
    taken = [a for a in leaf.eligible if a.key in used and a not in partial]
    if taken:
        still.append(
            ", ".join(f"@{a.login}" for a in taken)
            + (" already counts" if len(taken) == 1 else " already count")
            + " for another requirement (one person satisfies one requirement)"
        )
    if (req.users or req.teams) and not leaf.candidates:
        reason = "nobody can satisfy this requirement: its users and teams list no one who may"
        reason += " approve (the author, contributors and excluded people do not count)"
    else:
        reason = f"{len(partial)} of {req.count} approvals"
    return RequirementResult(
        id=req.id,
        kind="requirement",
        satisfied=False,
        needed=req.count,
        who_can=leaf.who_can,
        candidates=leaf.candidates,
        counted=_counted(partial, req.id),
        still_needed="; ".join(still) or "a different combination of approvers",
        reason=reason,
        description=req.description,
        source=req.source,
    )


def _entry_result(
    entry: _Entry, choice: _Choice, used: set[str], distinct: bool
) -> RequirementResult:
    node, leaves = entry
    scratch = used if distinct else set()
    if isinstance(node, Requirement):
        return _leaf_result(leaves[0], choice[1] if choice else None, scratch)
    children: list[RequirementResult] = []
    for alt, leaf in enumerate(leaves):
        if choice is not None and choice[0] == alt:
            children.append(_leaf_result(leaf, choice[1], scratch))
        elif choice is not None:
            children.append(_unsatisfied_alt(_leaf_result(leaf, None, set(scratch))))
        else:
            # each alternative shows its own progress; none of them claims anyone
            children.append(_leaf_result(leaf, None, set(scratch)))
    satisfied = choice is not None
    taken = children[choice[0]] if choice else None
    return RequirementResult(
        id=node.id,
        kind="any_of",
        satisfied=satisfied,
        needed=1,
        who_can="any one of: " + "; ".join(f"{c.id} ({c.who_can})" for c in children),
        candidates=tuple(sorted({c for child in children for c in child.candidates})),
        counted=taken.counted if taken else (),
        still_needed=""
        if satisfied
        else "one of: " + "; ".join(f"{c.id}: {c.still_needed}" for c in children),
        reason=f"satisfied by {taken.id}" if taken else "no alternative is satisfied yet",
        source=node.source,
        children=tuple(children),
    )


def _unsatisfied_alt(node: RequirementResult) -> RequirementResult:
    return RequirementResult(
        id=node.id,
        kind=node.kind,
        satisfied=False,
        needed=node.needed,
        who_can=node.who_can,
        candidates=node.candidates,
        counted=(),
        still_needed="not needed: another alternative is satisfied",
        reason="not needed",
        description=node.description,
        source=node.source,
    )


def _rejections(
    ev: _Eval, latest: Mapping[str, Review], leaves: Sequence[_Leaf], author: str | None
) -> list[Rejection]:
    found: list[Rejection] = []
    for review in sorted(latest.values(), key=_order):
        if review.state != "CHANGES_REQUESTED":
            continue
        key = review.login.lower()
        if author is not None and key == author.lower():
            # GitHub does not let authors review their own PR; if one shows up anyway it
            # neither approves nor blocks (the author's word is the PR itself)
            ev.ignore(
                review,
                "author",
                f"changes requested by @{review.login} do not count: they opened the PR",
            )
            continue
        qualifies: list[str] = []
        for leaf in leaves:
            match, _ = _matches(ev, leaf.req, key)
            if not match:
                continue
            ok, perm = ev.permission(review.login)
            # unknown permission: treat the objection as blocking (fail closed)
            if not ok or _perm_ok(perm, leaf.req.min_permission):
                qualifies.append(leaf.req.id)
        if qualifies:
            found.append(
                Rejection(
                    login=review.login,
                    review_id=review.id,
                    commit_id=review.commit_id,
                    html_url=review.html_url,
                    requirements=tuple(dict.fromkeys(qualifies)),
                )
            )
        else:
            ev.ignore(
                review,
                "not_eligible",
                f"changes requested by @{review.login} on {short_sha(review.commit_id)} do not "
                "block: they could not satisfy any approval requirement",
            )
    return found


def _leaves_of(node: Requirement | AnyOf) -> list[Requirement]:
    return [node] if isinstance(node, Requirement) else list(node.any_of)


def evaluate_gate(
    requirements: ApprovalRequirements,
    ctx: PullContext,
    *,
    now: datetime,
    options: GateOptions | None = None,
    requirements_base_sha: str | None = None,
) -> GateResult:
    """Decide whether the reviews on ``ctx`` satisfy ``requirements``; never raises on ``ctx``.

    ``requirements`` must come from the policy at the PR's *current* base. Pass
    ``requirements_base_sha`` (the base SHA the policy was read from) and the gate refuses to
    pass when the PR's base has moved since, so a retarget between reading policy and judging
    reviews cannot slip through. ``now`` only stamps the result (the core has no clock).
    """
    ev = _Eval(requirements, ctx, options or GateOptions())
    _, head = ev.call("head commit", ctx.head_sha)
    _, base_ref = ev.call("base branch", ctx.base_ref)
    _, base_sha = ev.call("base commit", ctx.base_sha)
    _, author = ev.call("pull request author", ctx.author)
    if (
        requirements_base_sha is not None
        and base_sha is not None
        and base_sha != requirements_base_sha
    ):
        ev.blockers.append(
            f"the approval requirements were read from base {short_sha(requirements_base_sha)} "
            f"but the PR's base is now {short_sha(base_sha)} (retargeted or moved): evaluate "
            "again with the policy of the current base"
        )

    ok_reviews, reviews = ev.call("reviews", ctx.reviews)
    latest = _latest_reviews(ev, reviews or ()) if ok_reviews else {}
    ok_commits, commits = ev.call("commits", ctx.commits)
    contributors = _contributors(ev, commits or ()) if ok_commits else None
    approvals = _valid_approvals(ev, latest, author=author, head=head, contributors=contributors)

    not_counting = {k.lower() for k in requirements.excluded}
    if author:
        not_counting.add(author.lower())
    not_counting |= set(contributors or {})
    entries: list[_Entry] = [
        (node, [_leaf(ev, r, approvals, not_counting) for r in _leaves_of(node)])
        for node in requirements.all_of
    ]
    all_leaves = [leaf for _, leaves in entries for leaf in leaves]

    search = _Search(entries, requirements.distinct_approvers)
    choices = search.run() if entries else []
    if search.exhausted:
        ev.blockers.append(
            "too many combinations of approvers to search exhaustively; ask fewer people to "
            "approve or simplify the policy's requirements"
        )
    used: set[str] = (
        {a.key for choice in choices if choice is not None for a in choice[1]}
        if requirements.distinct_approvers
        else set()
    )
    nodes = tuple(
        _entry_result(entry, choice, used, requirements.distinct_approvers)
        for entry, choice in zip(entries, choices, strict=True)
    )

    for approval in approvals:
        on = f"approval by @{approval.login} on {short_sha(approval.review.commit_id)}"
        if any(approval in leaf.eligible for leaf in all_leaves):
            continue  # counts, shows progress, or is simply more than needed
        matching = [leaf for leaf in all_leaves if _matches(ev, leaf.req, approval.key)[0]]
        if matching:
            ok, perm = ev.permission(approval.login)
            needed = min((leaf.req.min_permission for leaf in matching), key=PERMISSION_ORDER.index)
            has = "an unknown permission" if not ok else f"{perm or 'no'} access"
            ev.ignore(
                approval.review,
                "permission",
                f"{on} does not count: @{approval.login} has {has}, needs {needed} or more",
            )
        else:
            ev.ignore(
                approval.review,
                "not_eligible",
                f"{on} does not count: no requirement asks for @{approval.login}",
            )

    rejections = _rejections(ev, latest, all_leaves, author)

    if not requirements.all_of and not requirements.none_required:
        ev.blockers.append(
            "the policy returned no approval requirements and did not say none are needed; "
            "failing closed (fix the policy on the base branch)"
        )
    all_met = all(n.satisfied for n in nodes)
    if rejections:
        status: GateStatus = "rejected"
        who = ", ".join(f"@{r.login}" for r in rejections)
        reason = f"changes requested by {who}: they must approve, or their review must be dismissed"
    elif ev.errors:
        status = "pending"
        reason = "could not evaluate approvals: " + "; ".join(
            f"{e.operation}: {e.message}" for e in ev.errors[:3]
        )
    elif ev.blockers:
        status = "pending"
        reason = ev.blockers[0]
    elif not nodes:
        status = "satisfied"
        reason = "the policy says no approval is needed"
    elif all_met:
        status = "satisfied"
        reason = f"all {len(nodes)} approval requirement{'s' if len(nodes) > 1 else ''} satisfied"
    else:
        status = "pending"
        done = sum(1 for n in nodes if n.satisfied)
        reason = f"{done} of {len(nodes)} approval requirements satisfied; waiting for " + (
            "; ".join(f"{n.id}: {n.still_needed}" for n in nodes if not n.satisfied)
        )
    return GateResult(
        status=status,
        reason=reason,
        evaluated_at=now,
        author=author,
        head_sha=head,
        base_ref=base_ref,
        base_sha=base_sha,
        requirements=nodes,
        ignored=tuple(ev.ignored),
        rejections=tuple(rejections),
        errors=tuple(ev.errors),
        blockers=tuple(ev.blockers),
    )


def simulate_gate(
    requirements: ApprovalRequirements,
    author: str,
    approvers: Sequence[str],
    *,
    now: datetime,
    teams: Mapping[str, Iterable[str]] | None = None,
    permissions: Mapping[str, Permission | None] | None = None,
    changes_requested: Sequence[str] = (),
) -> GateResult:
    """What the gate would say if ``approvers`` approved a PR by ``author`` (``plangate explain``).

    Every approver approves the head at ``now``; everyone has write access unless
    ``permissions`` says otherwise; ``teams`` maps GitHub team slugs (``org/team``) to members
    for policies that name slugs (policy-listed members are already in ``requirements``).
    """
    reviews = [
        Review(
            id=i,
            login=login,
            state="APPROVED",
            commit_id=LOCAL_HEAD_SHA,
            submitted_at=now,
        )
        for i, login in enumerate(approvers, start=1)
    ]
    reviews += [
        Review(
            id=len(reviews) + i,
            login=login,
            state="CHANGES_REQUESTED",
            commit_id=LOCAL_HEAD_SHA,
            submitted_at=now,
        )
        for i, login in enumerate(changes_requested, start=1)
    ]
    ctx = LocalPullContext(
        author_login=author,
        reviews_=tuple(reviews),
        teams={slug: frozenset(members) for slug, members in (teams or {}).items()},
        permissions=dict(permissions or {}),
    )
    return evaluate_gate(requirements, ctx, now=now)


def to_attestation_approvers(result: GateResult) -> tuple[Approver, ...]:
    """The counted approvals as the attestation's ``approvers`` (only for a satisfied result).

    Raises ``ValueError`` when the result is not satisfied: an attestation for an unmet gate
    must be impossible to build by accident.
    """
    if not result.satisfied:
        raise ValueError(f"the approval gate is not satisfied ({result.status}): {result.reason}")
    return tuple(
        Approver(
            login=a.login,
            reviewId=a.review_id,
            commit=a.commit_id,
            # GitHub's clock may run a little ahead of ours; the statement requires
            # approvedAt <= evaluatedAt, and the review id pins the exact review anyway
            approvedAt=min(a.submitted_at or result.evaluated_at, result.evaluated_at),
            requirement=a.requirement,
        )
        for a in result.approvals()
    )
