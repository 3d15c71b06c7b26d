"""The task graph: duplicate ids, unknown needs, cycles with their path, levels, reachability."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from app.plan.graph import (
    Reachability,
    ancestors,
    downstream_origins,
    find_graph_issues,
    topological_levels,
)


def codes(steps, **kw):
    return [(i.code, i.message) for i in find_graph_issues(steps, **kw)]


def test_clean_graph_has_no_issues():
    assert codes([("a", []), ("b", ["a"]), ("c", ["a", "b"])]) == []


def test_long_cycle_is_reported_in_needs_direction_from_the_first_step():
    steps = [("a", ["d"]), ("b", ["a"]), ("c", ["b"]), ("d", ["c"]), ("e", [])]
    assert codes(steps) == [("graph.cycle", "steps form a cycle: a -> d -> c -> b -> a")]


def test_cycle_not_involving_the_first_step():
    steps = [("root", []), ("x", ["root", "y"]), ("y", ["x"])]
    (issue,) = find_graph_issues(steps)
    assert issue.message == "steps form a cycle: x -> y -> x"
    assert issue.step == "x" and issue.index == 1


def test_unknown_need_suggests_and_tolerates_broken_steps():
    steps = [("backup", []), ("migrate", ["bakup", "broken"])]
    issues = find_graph_issues(steps, known_ids={"broken"})
    assert [(i.code, i.need_index, i.hint) for i in issues] == [
        ("step.unknown_need", 0, "did you mean 'backup'?")
    ]


def test_duplicate_ids_point_at_the_second():
    (issue,) = find_graph_issues([("a", []), ("b", []), ("a", [])])
    assert (issue.code, issue.index) == ("step.duplicate_id", 2)
    assert issue.message == "step id 'a' is used twice (first by step #1)"


def test_levels_are_deterministic_and_keep_plan_order():
    steps = [("z", []), ("a", []), ("m", ["z"]), ("b", ["a", "m"]), ("c", [])]
    assert topological_levels(steps) == [["z", "a", "c"], ["m"], ["b"]]


def test_downstream_origins_follow_transitive_needs():
    needs = {"p": (), "a": ("p",), "b": ("a",), "c": (), "d": ("c",)}
    assert downstream_origins(["p"], needs) == {"a": "p", "b": "p"}


@st.composite
def dags(draw):
    n = draw(st.integers(1, 25))
    ids = [f"s{i}" for i in range(n)]
    needs = {}
    for i, step in enumerate(ids):
        if i:
            needs[step] = tuple(sorted(set(draw(st.lists(st.sampled_from(ids[:i]), max_size=3)))))
        else:
            needs[step] = ()
    order = draw(st.permutations(ids))  # plan order need not be topological
    return {s: needs[s] for s in order}


@settings(max_examples=100, deadline=None)
@given(dags(), st.data())
def test_reachability_agrees_with_full_ancestor_sets(needs, data):
    reach = Reachability(needs)
    ids = list(needs)
    for _ in range(10):
        step = data.draw(st.sampled_from(ids))
        target = data.draw(st.sampled_from(ids))
        assert reach.is_upstream(target, step) == (target in ancestors(step, needs))
    assert not reach.is_upstream("unknown", ids[0])


def test_suggestions_are_capped_so_bad_plans_stay_linear():
    from app.plan.graph import MAX_SUGGESTIONS

    steps = [(f"step-{i}", [f"step-{i}x"]) for i in range(MAX_SUGGESTIONS * 3)]
    issues = find_graph_issues(steps)
    assert len(issues) == len(steps)
    hinted = [i for i in issues if i.hint and i.hint.startswith("did you mean")]
    assert len(hinted) == MAX_SUGGESTIONS
    assert all(i.hint == "list an existing step id" for i in issues[MAX_SUGGESTIONS:])
