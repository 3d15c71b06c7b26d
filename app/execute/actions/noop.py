"""``noop``: does nothing, echoes its outputs; ``fail_times`` fails the first attempts (drills)."""

from __future__ import annotations

from pydantic import BaseModel

from app.actions.builtin import NoopInputs
from app.execute.actions._support import expect_inputs
from app.execute.actions.base import ActionContext, ActionResult
from app.execute.actions.errors import ActionFailed

__all__ = ["NoopAction"]


class NoopAction:
    """Attempt numbers start at 1; attempts ``1..fail_times`` fail with a retryable error."""

    name = "noop"

    async def run(self, inputs: BaseModel, ctx: ActionContext) -> ActionResult:
        data = expect_inputs(inputs, NoopInputs, ctx)
        if ctx.attempt <= data.fail_times:
            raise ActionFailed(
                f"step '{ctx.step_id}': drill failure {ctx.attempt} of {data.fail_times}",
                step=ctx.step_id,
                kind="noop.drill",
                retryable=True,
            )
        return ActionResult(outputs=dict(data.outputs), log=data.message)

    def breaker_key(self, inputs: BaseModel) -> str:
        return "noop"
