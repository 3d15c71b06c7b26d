"""The action registry: built-ins, and third-party actions through ``plangate.actions``."""

from __future__ import annotations

import textwrap
from importlib.metadata import EntryPoint

import pytest

from app.actions import registry as registry_module
from app.actions.registry import ENTRY_POINT_GROUP, ActionRegistry, ActionSpec
from app.cli import main

BUILTIN_NAMES = [
    "agent",
    "github.issue",
    "github.pull_request",
    "github.workflow",
    "http",
    "noop",
    "probe",
    "shell",
]

PLUGIN_SOURCE = """
from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.actions.registry import ActionSpec


class DeployInputs(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    service: str = Field(min_length=1)
    replicas: int = Field(1, ge=1, le=100)


SPEC = ActionSpec(
    "acme.deploy", DeployInputs, mutates=True, idempotent=True, summary="deploy a service"
)


def make_spec():
    return ActionSpec(
        "acme.factory", DeployInputs, mutates=False, idempotent=True, summary="from a factory"
    )


class CrashingInputs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: str = ""

    @field_validator("value")
    @classmethod
    def _crash(cls, value):
        raise TypeError("plugin bug")


class HugeDefaultInputs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit: int = 2**60


CRASHING = ActionSpec("acme.crash", CrashingInputs, mutates=False, idempotent=True, summary="x")
HUGE = ActionSpec("acme.huge", HugeDefaultInputs, mutates=False, idempotent=True, summary="x")
NOT_A_SPEC = object()
WRONG_NAME = ActionSpec("acme.other", DeployInputs, mutates=False, idempotent=True, summary="x")
CLASHES = ActionSpec("shell", DeployInputs, mutates=False, idempotent=True, summary="x")
"""

PLAN = """\
apiVersion: plangate.dev/v1
kind: Plan
id: {plan_id}
title: Plugin plan
team: platform
environment: staging
steps:
{steps}
"""


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    """Install a fake plugin package and point ``entry_points`` at the given entries."""
    (tmp_path / "acme_plangate_plugin.py").write_text(PLUGIN_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))

    def install(**entries: str) -> None:
        eps = [EntryPoint(name, value, ENTRY_POINT_GROUP) for name, value in entries.items()]

        def fake_entry_points(*, group: str):
            assert group == ENTRY_POINT_GROUP
            return eps

        monkeypatch.setattr(registry_module, "entry_points", fake_entry_points)
        monkeypatch.setattr(registry_module, "_DEFAULT", None)  # reload through the CLI

    return install


def write_plan(tmp_path, name: str, steps: str) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(PLAN.format(plan_id=name, steps=textwrap.indent(steps, "  ")))
    return str(path)


def test_builtins_are_registered_with_their_mutation_defaults():
    reg = ActionRegistry.builtins()
    assert reg.names() == BUILTIN_NAMES
    assert reg.get("shell").mutates is True
    assert reg.get("probe").mutates is False and reg.get("probe").mutates_fixed
    assert reg.get("github.issue").mutates is True and reg.get("github.issue").mutates_fixed
    assert "noop" in reg and "nope" not in reg
    assert [spec.name for spec in reg] == BUILTIN_NAMES


def test_registering_a_name_twice_is_refused():
    spec = ActionRegistry.builtins().get("noop")
    with pytest.raises(ValueError, match="action 'noop' is registered twice"):
        ActionRegistry([spec, spec])


def test_plugin_spec_and_factory_are_loaded(plugins):
    plugins(
        **{
            "acme.deploy": "acme_plangate_plugin:SPEC",
            "acme.factory": "acme_plangate_plugin:make_spec",
        }
    )
    reg = ActionRegistry.with_plugins()
    assert reg.get("acme.deploy").mutates is True
    assert reg.get("acme.factory").summary == "from a factory"
    assert reg.load_errors == {}
    assert set(BUILTIN_NAMES) <= set(reg.names())


def test_plugin_action_is_checked_against_its_input_model(plugins, tmp_path, capsys):
    plugins(**{"acme.deploy": "acme_plangate_plugin:SPEC"})
    good = write_plan(
        tmp_path,
        "good",
        "- id: deploy\n  action: acme.deploy\n  with: {service: api}\n"
        "  compensate: {action: acme.deploy, with: {service: api, replicas: 2}}\n",
    )
    assert main(["check", good]) in (0, 1)  # valid (the policy verdict is not tested here)
    assert "error" not in capsys.readouterr().out

    bad = write_plan(
        tmp_path,
        "bad",
        "- id: deploy\n  action: acme.deploy\n  with: {service: api, replicas: 0}\n",
    )
    assert main(["check", bad]) == 2
    out = capsys.readouterr().out
    assert f"{bad}:10:36: step 'deploy': field 'with.replicas'" in out
    # the plugin says it mutates, so the missing compensation is reported too
    assert f"{bad}:8:5: step 'deploy' changes the outside world" in out


def test_broken_plugin_does_not_break_unrelated_plans(plugins, tmp_path, capsys):
    plugins(
        **{
            "acme.missing": "acme_plangate_plugin_not_installed:SPEC",
            "acme.deploy": "acme_plangate_plugin:SPEC",
        }
    )
    unrelated = write_plan(tmp_path, "unrelated", "- {id: a, action: noop}\n")
    uses_working = write_plan(
        tmp_path,
        "working",
        "- {id: a, action: acme.deploy, with: {service: x}, compensate: {none: test plugin}}\n",
    )
    assert main(["check", unrelated, uses_working]) in (0, 1)  # valid; verdict not tested here
    assert "error" not in capsys.readouterr().out


def test_broken_plugin_is_reported_when_a_plan_uses_it(plugins, tmp_path, capsys):
    plugins(**{"acme.missing": "acme_plangate_plugin_not_installed:SPEC"})
    path = write_plan(tmp_path, "uses", "- {id: a, action: acme.missing}\n")
    assert main(["check", path]) == 2
    out = capsys.readouterr().out
    assert f"{path}:8:21: step 'a': unknown action 'acme.missing'" in out
    assert "the plugin for 'acme.missing' failed to load: ModuleNotFoundError" in out


@pytest.mark.parametrize(
    ("name", "target", "error"),
    [
        ("acme.bad", "acme_plangate_plugin:NOT_A_SPEC", "TypeError: entry point gave object"),
        ("acme.bad", "acme_plangate_plugin:WRONG_NAME", "gives action 'acme.other'"),
        ("acme.bad", "acme_plangate_plugin:NO_SUCH_ATTRIBUTE", "AttributeError"),
    ],
)
def test_invalid_plugins_are_recorded_not_raised(plugins, name, target, error):
    plugins(**{name: target})
    reg = ActionRegistry.with_plugins()
    assert name not in reg
    assert error in reg.load_errors[name]


def test_plugin_cannot_replace_a_builtin(plugins):
    plugins(shell="acme_plangate_plugin:CLASHES")
    reg = ActionRegistry.with_plugins()
    assert reg.get("shell").inputs.__name__ == "ShellInputs"
    assert "reuses the name of an existing action" in reg.load_errors["shell"]


def test_extra_specs_are_added():
    spec = ActionSpec("local.x", ActionRegistry.builtins().get("noop").inputs, False, True, "x")
    assert "local.x" in ActionRegistry.with_plugins([spec])


def test_crashing_plugin_model_is_reported_not_raised(plugins, tmp_path, capsys):
    plugins(**{"acme.crash": "acme_plangate_plugin:CRASHING"})
    path = write_plan(tmp_path, "crash", "- {id: a, action: acme.crash, with: {value: x}}\n")
    assert main(["check", path]) == 2
    out = capsys.readouterr().out
    assert (
        f"{path}:8:39: step 'a': the input model of action 'acme.crash' failed: "
        "TypeError: plugin bug (this is a bug in the package that provides 'acme.crash')"
    ) in out


def test_plugin_default_without_canonical_json_is_reported(plugins, tmp_path, capsys):
    plugins(**{"acme.huge": "acme_plangate_plugin:HUGE"})
    path = write_plan(tmp_path, "huge", "- {id: a, action: acme.huge}\n")
    assert main(["check", path]) == 2
    out = capsys.readouterr().out
    assert f"{path}: the plan has no canonical JSON form, so no digest:" in out
