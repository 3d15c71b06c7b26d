"""docs/plan-format.md matches the code: its example plan is valid, every error code is listed."""

from __future__ import annotations

import re
from pathlib import Path

from app.plan.loader import load_plan_bytes
from app.plan.model import Budget, Canary, Compensation, Estimate, Plan, RetryPolicy, Step

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "plan-format.md").read_text()
SOURCES = [
    ROOT / "app" / "yaml_source.py",
    ROOT / "app" / "check.py",
    *(ROOT / "app" / "plan").glob("*.py"),
]
CODE_RE = re.compile(r'"((?:file|yaml|path|field|action|step|graph|canary|ref|plan)\.[a-z_]+)"')
#: strings that look like codes but are reference names (``${{ plan.id }}``)
CONTEXT_REFS = {"plan.id", "plan.digest", "plan.environment", "plan.team"}


def test_the_complete_example_is_a_valid_plan():
    block = re.search(r"## A complete example\n\n```yaml\n(.*?)```", DOC, re.S).group(1)
    loaded = load_plan_bytes("docs/plan-format.md", block.encode())
    assert loaded.plan.canary is not None


def test_every_error_code_in_the_code_is_documented():
    codes = {m for src in SOURCES for m in CODE_RE.findall(src.read_text())} - CONTEXT_REFS
    assert len(codes) > 30
    missing = sorted(code for code in codes if f"`{code}`" not in DOC)
    assert missing == []


def test_every_model_field_is_documented():
    for model in (Plan, Step, RetryPolicy, Budget, Canary, Compensation, Estimate):
        for name, field in model.model_fields.items():
            assert f"`{field.alias or name}`" in DOC, f"{model.__name__}.{name}"


def test_every_builtin_action_and_input_is_documented():
    from app.actions.registry import ActionRegistry

    for spec in ActionRegistry.builtins():
        section = DOC.split(f"### `{spec.name}`\n", 1)
        assert len(section) == 2, f"no section for {spec.name}"
        body = section[1].split("\n### ", 1)[0]
        for name, field in spec.inputs.model_fields.items():
            assert f"`{field.alias or name}`" in body, f"{spec.name}.{name}"
