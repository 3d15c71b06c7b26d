from __future__ import annotations

import asyncio

from tests.execute.fakes import RecordingAction, impls, make_runner, plan_from, shell_step


def test_chain_runs_in_order_with_idempotency_keys(tmp_path):
    loaded = plan_from(
        "steps:\n" + shell_step("a") + shell_step("b", ["a"]) + shell_step("c", ["b"])
    )
    shell = RecordingAction("shell")
    h = make_runner(tmp_path, impls(shell))
    result = asyncio.run(h.runner.run(loaded))
    assert result.status == "succeeded", result.reason
    assert shell.steps() == ["a", "b", "c"]
    assert shell.calls[0].key == f"{loaded.digest}:a"
    assert h.gate.calls == [loaded.digest]


def test_missing_implementation_is_reported_before_anything_runs(tmp_path):
    import pytest

    from app.errors import InputError

    loaded = plan_from(
        "steps:\n"
        + shell_step("a")
        + "  - id: b\n    action: http\n    needs: [a]\n    with: {url: 'https://x.example'}\n"
        "    compensate: {none: test}\n"
    )
    table = impls(shell := RecordingAction("shell"))
    del table["http"]
    h = make_runner(tmp_path, table)
    with pytest.raises(InputError, match="step 'b': action 'http' has no implementation"):
        asyncio.run(h.runner.run(loaded))
    assert shell.calls == []
    assert h.state.get_run(loaded.digest) is None


def test_outputs_flow_into_later_inputs(tmp_path):
    loaded = plan_from(
        "steps:\n"
        "  - id: build\n    action: noop\n"
        "  - id: deploy\n    action: shell\n    needs: [build]\n"
        "    with: {run: [deploy, '${{ steps.build.outputs.image }}', '${{ run.id }}']}\n"
        "    compensate: {none: test}\n"
    )
    noop = RecordingAction("noop", outputs={"build": {"image": "acme/app:9"}})
    shell = RecordingAction("shell")
    h = make_runner(tmp_path, impls(noop, shell))
    assert asyncio.run(h.runner.run(loaded)).status == "succeeded"
    assert shell.calls[0].inputs["run"] == ["deploy", "acme/app:9", "run-1"]
