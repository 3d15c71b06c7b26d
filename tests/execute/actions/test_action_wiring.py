"""Wiring: every registered built-in has an implementation; plugins bring theirs via ActionSpec."""

from __future__ import annotations

import subprocess
import sys

import pytest
from action_helpers import make_ctx, run
from pydantic import BaseModel, ConfigDict

from app.actions.builtin import NoopInputs
from app.actions.registry import ActionRegistry, ActionSpec
from app.errors import InputError
from app.execute.actions import builtin_implementations, implementations, settings_deps
from app.execute.actions.base import ActionContext, ActionResult
from app.settings import Settings


class EchoInputs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    text: str = ""


class EchoAction:
    name = "acme.echo"

    async def run(self, inputs: BaseModel, ctx: ActionContext) -> ActionResult:
        return ActionResult(outputs={"text": inputs.text})  # type: ignore[attr-defined]

    def breaker_key(self, inputs: BaseModel) -> str:
        return "acme"


def spec(name: str, run_: object) -> ActionSpec:
    return ActionSpec(name, EchoInputs, mutates=False, idempotent=True, summary="x", run=run_)


def test_every_builtin_in_the_registry_has_an_implementation():
    impls = builtin_implementations()
    assert sorted(impls) == ActionRegistry.builtins().names()
    for name, action in impls.items():
        assert action.name == name
        assert callable(action.run) and callable(action.breaker_key)


def test_noop_runs_through_the_wiring():
    impls = builtin_implementations()
    result = run(impls["noop"].run(NoopInputs(outputs={"x": "1"}), make_ctx()))
    assert result.outputs == {"x": "1"}


def test_plugin_implementation_as_instance_or_factory():
    registry = ActionRegistry(
        [*ActionRegistry.builtins(), spec("acme.echo", EchoAction()), spec("acme.made", None)]
    )
    got = implementations(registry)
    assert got.get("acme.echo") is not None
    assert run(got.actions["acme.echo"].run(EchoInputs(text="hi"), make_ctx())).outputs == {
        "text": "hi"
    }
    assert "ActionSpec.run is None" in got.errors["acme.made"]

    class Made(EchoAction):
        name = "acme.factory"

    factory_registry = ActionRegistry([spec("acme.factory", Made)])
    assert isinstance(implementations(factory_registry).actions["acme.factory"], Made)


def test_broken_plugin_implementations_are_reported_by_name():
    def explode():
        raise RuntimeError("no config")

    registry = ActionRegistry(
        [
            spec("acme.boom", explode),
            spec("acme.wrong", lambda: object()),
            spec("acme.misnamed", EchoAction),  # its implementation says "acme.echo"
        ],
        load_errors={"acme.broken": "ImportError: nope"},
    )
    got = implementations(registry)
    assert got.errors["acme.boom"] == "RuntimeError: no config"
    assert "not an Action" in got.errors["acme.wrong"]
    assert "named 'acme.echo', not 'acme.misnamed'" in got.errors["acme.misnamed"]
    assert got.errors["acme.broken"] == "ImportError: nope"
    assert "noop" in got.actions  # built-ins are unaffected


def test_importing_the_port_does_not_load_http_adapters():
    code = (
        "import sys, app.execute.actions.base, app.execute.actions; print('httpx' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_agent_endpoint_is_configured_by_env_through_settings():
    settings = Settings.from_env({"PLANGATE_AGENT_BASE_URL": "http://127.0.0.1:11434/v1/"})
    assert settings.agent_base_url == "http://127.0.0.1:11434/v1"
    assert Settings.from_env({}).agent_base_url is None
    with pytest.raises(InputError, match="PLANGATE_AGENT_BASE_URL='ftp://x'"):
        Settings.from_env({"PLANGATE_AGENT_BASE_URL": "ftp://x"})


def test_settings_reach_the_agent_and_github_actions():
    settings = Settings.from_env(
        {
            "PLANGATE_AGENT_BASE_URL": "http://llm.local/v1",
            "GITHUB_API_URL": "https://ghe.example/api/v3",
        }
    )
    deps = settings_deps(settings)
    assert deps == {
        "github_api_url": "https://ghe.example/api/v3",
        "agent_base_url": "http://llm.local/v1",
    }
    impls = implementations(ActionRegistry.builtins(), **deps)
    assert impls.actions["agent"].breaker_key(NoopInputs()) == "agent:llm.local"


PLUGIN = """
from pydantic import BaseModel, ConfigDict

from app.actions.registry import ActionSpec
from app.execute.actions.base import ActionResult


class GreetInputs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    who: str


class GreetAction:
    name = "acme.greet"

    async def run(self, inputs, ctx):
        return ActionResult(outputs={"greeting": f"hello {inputs.who} ({ctx.step_id})"})

    def breaker_key(self, inputs):
        return "acme.greet"


SPEC = ActionSpec(
    "acme.greet", GreetInputs, mutates=False, idempotent=True, summary="greet", run=GreetAction
)
"""


def test_plugin_from_the_entry_point_runs(tmp_path, monkeypatch):
    """A third-party package: entry point -> ActionSpec with ``run`` -> a runnable action."""
    from importlib.metadata import EntryPoint

    from app.actions import registry as registry_module

    (tmp_path / "acme_greet_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = [EntryPoint("acme.greet", "acme_greet_plugin:SPEC", "plangate.actions")]
    monkeypatch.setattr(registry_module, "entry_points", lambda *, group: eps)
    registry = ActionRegistry.with_plugins()
    got = implementations(registry)
    assert got.errors == {}
    action = got.actions["acme.greet"]
    inputs = registry.get("acme.greet").inputs(who="ops")
    result = run(action.run(inputs, make_ctx(step_id="hi")))
    assert result.outputs == {"greeting": "hello ops (hi)"}
