"""`plangate schema`: the committed copy stays in sync, and editors see what the loader accepts."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from app.cli import main
from app.plan.schema import plan_json_schema

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "plans").glob("*.yaml"))


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = plan_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_committed_schema_matches_plangate_schema(capsys):
    assert main(["schema"]) == 0
    printed = capsys.readouterr().out
    committed = (ROOT / "docs" / "plan.schema.json").read_text()
    assert printed == committed, (
        "docs/plan.schema.json is stale: run `plangate schema > docs/plan.schema.json`"
    )


def test_schema_output_is_json_with_an_id(capsys):
    main(["schema"])
    schema = json.loads(capsys.readouterr().out)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].startswith("https://")
    assert set(schema["required"]) >= {"apiVersion", "kind", "id", "title", "team", "steps"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_plans_satisfy_the_schema(validator, path):
    validator.validate(yaml.safe_load(path.read_text()))


@pytest.mark.parametrize(
    "step",
    [
        {"id": "a", "action": "noop", "colour": "blue"},
        {"id": "a", "action": "http", "with": {"url": "ftp://x"}},
        {"id": "a", "action": "shell", "with": {"run": []}},
        {"id": "A", "action": "noop"},
        {"id": "a", "action": "noop", "retry": {"max_attempts": 0}},
        {"id": "a", "action": "noop", "timeout": "soon"},
    ],
)
def test_schema_rejects_what_the_loader_rejects(validator, step):
    plan = {
        "apiVersion": "plangate.dev/v1",
        "kind": "Plan",
        "id": "p",
        "title": "t",
        "team": "t",
        "environment": "e",
        "steps": [step],
    }
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(plan)
