"""Property tests: the plan digest identifies the *meaning* of a plan, not its spelling.

Invariant under key order, flow/block style, quoting, comments, whitespace and omitted defaults;
different under any change of any field. The plans are generated, rendered to YAML text by a
small emitter that picks a random spelling for every node, and loaded through the real loader.
"""

from __future__ import annotations

import copy
import json
import random
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from yaml.nodes import ScalarNode
from yaml.resolver import Resolver

from app.errors import PlanError
from app.plan.digest import canonical_json, plan_digest
from app.plan.loader import load_plan_bytes

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- generating plans ------------------------------------------------------------------------

_TEXT = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABC0123456789 -_.:/#'\"{}[],!&*?|>%@`=",
    min_size=1,
    max_size=20,
).filter(lambda s: s.strip() == s and "${{" not in s)
_IDS = st.from_regex(r"[a-z][a-z0-9-]{0,8}[a-z0-9]", fullmatch=True)


@st.composite
def plans(draw) -> dict[str, Any]:
    """A valid plan as plain data, defaults omitted."""
    n = draw(st.integers(1, 5))
    ids = [f"s{i}-{draw(_IDS)}" for i in range(n)]
    steps: list[dict[str, Any]] = []
    for i, step_id in enumerate(ids):
        kind = draw(st.sampled_from(["noop", "shell", "http", "agent"]))
        step: dict[str, Any] = {"id": step_id, "action": kind}
        if kind == "noop":
            if draw(st.booleans()):
                step["with"] = {"message": draw(_TEXT)}
        elif kind == "shell":
            step["with"] = {"run": draw(st.lists(_TEXT, min_size=1, max_size=3))}
            step["compensate"] = draw(
                st.sampled_from(
                    [{"none": "cannot be undone"}, {"action": "shell", "with": {"run": ["undo"]}}]
                )
            )
        elif kind == "http":
            step["with"] = {"url": "https://example.com/" + draw(_IDS)}
            if draw(st.booleans()):
                step["with"]["method"] = draw(st.sampled_from(["POST", "PUT", "DELETE"]))
            step["compensate"] = {"none": "the endpoint is idempotent"}
        else:
            step["with"] = {"model": draw(_IDS), "prompt": draw(_TEXT)}
            step["estimate"] = {"tokens": {"model": "gpt", "input": draw(st.integers(0, 10**6))}}
        if i and draw(st.booleans()):
            step["needs"] = sorted(set(draw(st.lists(st.sampled_from(ids[:i]), max_size=2))))
        if draw(st.booleans()):
            step["retry"] = {"max_attempts": draw(st.integers(1, 10))}
        if draw(st.booleans()):
            step["timeout"] = draw(st.integers(1, 3600))
        steps.append(step)
    plan: dict[str, Any] = {
        "apiVersion": "plangate.dev/v1",
        "kind": "Plan",
        "id": draw(_IDS),
        "title": draw(_TEXT),
        "team": draw(_IDS),
        "environment": draw(st.sampled_from(["staging", "production"])),
        "steps": steps,
    }
    if draw(st.booleans()):
        plan["resources"] = sorted(set(draw(st.lists(_IDS, min_size=1, max_size=3))))
    if draw(st.booleans()):
        plan["budget"] = {"money": {"hard": draw(st.integers(1, 1000))}}
    return plan


def with_explicit_defaults(plan: dict[str, Any], rnd: random.Random) -> dict[str, Any]:
    """The same plan with some defaults written out and durations/money spelled differently."""
    plan = copy.deepcopy(plan)
    if rnd.random() < 0.5:
        plan["description"] = ""
    if rnd.random() < 0.5:
        plan.setdefault("budget", {})["on_hard_limit"] = "abort"
    if "budget" in plan and "hard" in plan["budget"].get("money", {}):
        hard = plan["budget"]["money"]["hard"]
        plan["budget"]["money"]["hard"] = rnd.choice([hard, f"{hard}.00", float(hard)])
    for step in plan["steps"]:
        if rnd.random() < 0.5:
            step.setdefault("needs", [])
        if rnd.random() < 0.5:
            retry = step.setdefault("retry", {})
            retry.setdefault("backoff_coefficient", 2.0)
            retry.setdefault("jitter", "full")
            retry.setdefault("initial_interval", rnd.choice([1, "1s", "1000ms"]))
        if "timeout" in step:
            seconds = step["timeout"]
            step["timeout"] = rnd.choice([seconds, f"{seconds}s", f"{seconds * 1000}ms"])
        elif rnd.random() < 0.5:
            step["timeout"] = rnd.choice([300, "5m", "300s"])
        if step["action"] == "http" and rnd.random() < 0.5:
            step["with"].setdefault("method", "GET")
            step["with"]["expect_status"] = [200, 201, 202, 204]
        if step["action"] == "noop" and rnd.random() < 0.5:
            step.setdefault("with", {})["fail_times"] = 0
            step["mutates"] = False
        if step["action"] == "shell" and rnd.random() < 0.5:
            step["mutates"] = True
        if rnd.random() < 0.3:
            step["estimate"] = step.get("estimate", {}) | {"api_calls": 0}
    return plan


# -- rendering YAML with a random spelling ---------------------------------------------------

_RESOLVER = Resolver()
_STR_TAG = "tag:yaml.org,2002:str"


def _plain_ok(text: str) -> bool:
    if not text or not all(c.isalnum() or c in "-_./ " for c in text) or text[0] in "-./ ":
        return False
    return _RESOLVER.resolve(ScalarNode, text, (True, False)) == _STR_TAG


def _scalar(value: Any, rnd: random.Random) -> str:
    if value is None:
        return rnd.choice(["null", "~", "Null"])
    if isinstance(value, bool):
        return rnd.choice(["true", "True", "TRUE"] if value else ["false", "False", "FALSE"])
    if isinstance(value, int | float):
        return repr(value)
    choices = ["single", "double"] + (["plain"] if _plain_ok(value) else [])
    style = rnd.choice(choices)
    if style == "plain":
        return value
    if style == "single":
        return "'" + value.replace("'", "''") + "'"
    return json.dumps(value)


def _flow(value: Any, rnd: random.Random) -> str:
    sp = rnd.choice(["", " "])
    if isinstance(value, dict):
        items = list(value.items())
        rnd.shuffle(items)
        inner = f",{sp}".join(f"{_scalar(k, rnd)}: {_flow(v, rnd)}" for k, v in items)
        return "{" + sp + inner + sp + "}"
    if isinstance(value, list):
        return "[" + sp + f",{sp}".join(_flow(v, rnd) for v in value) + sp + "]"
    return _scalar(value, rnd)


def _block(value: Any, indent: int, rnd: random.Random) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        items = list(value.items())
        rnd.shuffle(items)
        for key, item in items:
            if rnd.random() < 0.2:
                lines.append(f"{pad}# a comment about {key}")
            if rnd.random() < 0.1:
                lines.append("")
            key_text = _scalar(key, rnd)
            if isinstance(item, dict | list) and item and rnd.random() < 0.7:
                lines.append(f"{pad}{key_text}:" + rnd.choice(["", "  # trailing"]))
                step_in = rnd.choice([2, 4]) if isinstance(item, dict) else rnd.choice([0, 2])
                lines += _block(item, indent + step_in, rnd)
            else:
                lines.append(f"{pad}{key_text}:{' ' * rnd.randint(1, 3)}{_flow(item, rnd)}")
    else:  # a non-empty list
        for item in value:
            if isinstance(item, dict) and item and rnd.random() < 0.7:
                sub = _block(item, indent + 2, rnd)
                first = next(
                    i for i, line in enumerate(sub) if line and not line.lstrip().startswith("#")
                )
                sub[first] = f"{pad}- " + sub[first].lstrip()
                lines += sub
            else:
                lines.append(f"{pad}- {_flow(item, rnd)}")
    return lines


def render(plan: dict[str, Any], rnd: random.Random) -> bytes:
    if rnd.random() < 0.15:
        text = _flow(plan, rnd) + "\n"
    else:
        text = "\n".join(_block(plan, 0, rnd)) + "\n"
    if rnd.random() < 0.3:
        text = "# a reviewed plan\n---\n" + text
    return text.encode()


def load(raw: bytes):
    try:
        return load_plan_bytes("p.yaml", raw)
    except PlanError as exc:  # pragma: no cover - shows the text on failure
        raise AssertionError(f"{exc.message}\n---\n{raw.decode()}") from exc


# -- properties ------------------------------------------------------------------------------


@SETTINGS
@given(plans(), st.randoms(use_true_random=False), st.randoms(use_true_random=False))
def test_digest_ignores_spelling_order_and_omitted_defaults(plan, rnd_a, rnd_b):
    reference = load(json.dumps(plan).encode())  # JSON is YAML: the plainest spelling
    a = load(render(plan, rnd_a))
    b = load(render(with_explicit_defaults(plan, rnd_b), rnd_b))
    assert a.digest == reference.digest
    assert b.digest == reference.digest
    assert a.plan == b.plan


@SETTINGS
@given(plans())
def test_effective_plan_round_trips_to_the_same_digest(plan):
    loaded = load(json.dumps(plan).encode())
    again = load(canonical_json(loaded.plan))
    assert again.digest == loaded.digest == plan_digest(again.plan)


def _leaves(value: Any, path: tuple = ()):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, (*path, index))
    elif value is not None:
        yield path, value


def _changed(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    return value + "x" if value[-1:] != "x" else value[:-1] + "y"


@SETTINGS
@given(plans(), st.data())
def test_any_field_change_changes_the_digest(plan, data):
    loaded = load(json.dumps(plan).encode())
    effective = json.loads(canonical_json(loaded.plan))
    leaves = list(_leaves(effective))
    path, value = data.draw(st.sampled_from(leaves), label="leaf")
    changed = copy.deepcopy(effective)
    node = changed
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = _changed(value)
    try:
        other = load_plan_bytes("p.yaml", json.dumps(changed).encode())
    except PlanError:
        assume(False)  # the change made the plan invalid: nothing to compare
        return
    assert other.digest != loaded.digest, path


@SETTINGS
@given(plans(), st.data())
def test_structural_changes_change_the_digest(plan, data):
    loaded = load(json.dumps(plan).encode())
    changed = copy.deepcopy(plan)
    change = data.draw(
        st.sampled_from(["drop_step", "swap_steps", "add_resource", "add_field", "rename"])
    )
    if change == "drop_step":
        assume(len(changed["steps"]) > 1)
        dropped = changed["steps"].pop()["id"]
        assume(all(dropped not in s.get("needs", []) for s in changed["steps"]))
    elif change == "swap_steps":
        assume(len(changed["steps"]) > 1)
        changed["steps"][0], changed["steps"][1] = changed["steps"][1], changed["steps"][0]
    elif change == "add_resource":
        changed["resources"] = [*changed.get("resources", []), "zz/new-lock"]
    elif change == "add_field":
        changed["steps"][0]["name"] = "a label"
    else:
        changed["steps"][-1]["id"] = "renamed-step"
    other = load(json.dumps(changed).encode())
    assert other.digest != loaded.digest


def test_digest_binds_the_effective_inputs_not_the_text():
    """Same text, different action defaults → different digest (what runs is what was approved)."""
    from pydantic import Field

    from app.actions.builtin import NoopInputs
    from app.actions.registry import BUILTINS, ActionRegistry, ActionSpec

    class LouderNoop(NoopInputs):
        message: str = Field("changed default")

    louder = ActionSpec("noop", LouderNoop, mutates=False, idempotent=True, summary="x")
    other = ActionRegistry([louder, *(s for s in BUILTINS if s.name != "noop")])
    text = json.dumps(
        {
            "apiVersion": "plangate.dev/v1",
            "kind": "Plan",
            "id": "p",
            "title": "t",
            "team": "t",
            "environment": "e",
            "steps": [{"id": "a", "action": "noop"}],
        }
    ).encode()
    default = load_plan_bytes("p.yaml", text)
    changed = load_plan_bytes("p.yaml", text, registry=other)
    assert default.plan.steps[0].with_["message"] == ""
    assert changed.plan.steps[0].with_["message"] == "changed default"
    assert default.digest != changed.digest
