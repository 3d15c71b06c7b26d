"""``noop``: echoes outputs; ``fail_times`` fails the first attempts (drills)."""

from __future__ import annotations

import pytest
from action_helpers import make_ctx, run

from app.actions.builtin import NoopInputs, ShellInputs
from app.errors import StepFailed
from app.execute.actions.noop import NoopAction


def test_noop_echoes_outputs():
    result = run(NoopAction().run(NoopInputs(message="hi", outputs={"a": "1"}), make_ctx()))
    assert result.outputs == {"a": "1"}
    assert result.log == "hi"


def test_noop_fails_the_first_attempts_then_succeeds():
    inputs = NoopInputs(fail_times=2)
    for attempt in (1, 2):
        with pytest.raises(StepFailed, match=f"drill failure {attempt} of 2") as info:
            run(NoopAction().run(inputs, make_ctx(attempt=attempt)))
        assert info.value.kind == "noop.drill" and info.value.retryable
    assert run(NoopAction().run(inputs, make_ctx(attempt=3))).outputs == {}


def test_wrong_input_model_is_a_non_retryable_wiring_error():
    with pytest.raises(StepFailed, match="expected NoopInputs, got ShellInputs") as info:
        run(NoopAction().run(ShellInputs(run=["true"]), make_ctx()))
    assert info.value.kind == "action.bad_inputs" and not info.value.retryable
