"""Live progress and the final summary table, with rich. CLI only; the runner emits events.

``ProgressSink`` is an ``EventSink``: it counts steps done / running / failed / retried from the
runner's events and redraws a small live table. It never influences the run.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from app.execute.result import RunResult

__all__ = ["ProgressSink", "summary_table"]

_STYLE = {
    "succeeded": "green",
    "skipped": "cyan",
    "failed": "red",
    "blocked": "yellow",
    "interrupted": "yellow",
    "not_run": "dim",
}


class ProgressSink:
    def __init__(self, console: Console, total: int, *, live: bool = True) -> None:
        self.console = console
        self.total = total
        self.started = time.monotonic()
        self.running: dict[str, int] = {}
        self.done = 0
        self.skipped = 0
        self.failed = 0
        self.retries = 0
        self.compensations: list[str] = []
        self.last = ""
        self._live = Live(self._render(), console=console, transient=True) if live else None

    def __enter__(self) -> ProgressSink:
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()

    def emit(self, event_type: str, **fields: Any) -> None:
        step = fields.get("step")
        if event_type == "step.started":
            self.running[step] = 1
        elif event_type == "attempt.started" and fields.get("phase") == "step":
            self.running[step] = fields.get("attempt", 1)
        elif event_type == "step.succeeded":
            self.running.pop(step, None)
            self.done += 1
        elif event_type == "step.skipped":
            self.skipped += 1
        elif event_type in ("step.failed", "step.paused"):
            self.running.pop(step, None)
            self.failed += 1
        elif event_type == "step.retry":
            self.retries += 1
        elif event_type.startswith("compensation."):
            self.compensations.append(f"{step}: {event_type.split('.')[1]}")
        if event_type in ("step.failed", "canary.aborted", "budget.hard_limit", "policy.denied"):
            self.last = f"{event_type}: {fields.get('error') or fields.get('reason') or ''}"
        if self._live is not None:
            self._live.update(self._render())

    def flush(self) -> None:
        pass

    def _render(self) -> Group:
        elapsed = time.monotonic() - self.started
        head = Text(
            f"{self.done + self.skipped}/{self.total} done ({self.skipped} resumed), "
            f"{len(self.running)} running, {self.failed} failed, {self.retries} retries, "
            f"{elapsed:.1f}s"
        )
        running = ", ".join(
            f"{s} (attempt {a})" if a > 1 else s for s, a in list(self.running.items())[:8]
        )
        parts: list[Any] = [head]
        if running:
            parts.append(Text(f"running: {running}", style="cyan"))
        if self.last:
            parts.append(Text(self.last, style="red"))
        return Group(*parts)


def summary_table(result: RunResult) -> Table:
    table = Table(title=f"plan {result.plan_id}: {result.status}", title_justify="left")
    table.add_column("step")
    table.add_column("status")
    table.add_column("attempts", justify="right")
    table.add_column("retries", justify="right")
    table.add_column("error", overflow="fold")
    for outcome in result.steps.values():
        table.add_row(
            outcome.step_id,
            Text(outcome.status, style=_STYLE.get(outcome.status, "")),
            str(outcome.attempts),
            str(outcome.retries),
            _short(outcome.error),
        )
    for comp in result.compensations:
        table.add_row(
            f"undo {comp.step_id}",
            Text(comp.status, style="green" if comp.status == "succeeded" else "yellow"),
            str(comp.attempts),
            "",
            _short(comp.error or comp.note),
        )
    return table


def _short(text: str | None, limit: int = 160) -> str:
    """First line of an error, capped: the table stays readable; details are in the events."""
    if not text:
        return ""
    line = text.strip().splitlines()[0]
    return line if len(line) <= limit else line[: limit - 1] + "…"
