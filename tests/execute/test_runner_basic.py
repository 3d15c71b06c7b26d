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
    assert shell.calls[0].key == f"{loaded.digest}:a:1"
    assert h.gate.calls == [loaded.digest]
