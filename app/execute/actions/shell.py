"""``shell``: run one program from an argv list. No shell, so inputs are never interpolated.

Why each guard exists:
- ``create_subprocess_exec`` with an argv list: a value with ``;`` or ``$(...)`` stays one
  argument.
- environment allow-list: the child sees only basic variables (``PATH``, ``HOME``, ``LANG``...),
  taken from the ``base_env`` the wiring injects (this module never reads ``os.environ``), plus
  the step's ``env`` and ``secret_env``. The runner's own credentials never leak into a child.
- own process group (``start_new_session``): on timeout or cancellation the whole group gets
  ``SIGKILL``, so grandchildren (``sh -c 'sleep 1000 &'``) die too.
- output is read while the program runs and capped at ``max_output_bytes`` per stream; the rest
  is drained and dropped, so a chatty program can neither block on a full pipe nor fill memory.
- every secret value of the run is replaced by ``***`` in what is captured.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from pydantic import BaseModel

from app.actions.builtin import ShellInputs
from app.execute.actions._support import (
    LOG_CHARS,
    Redactor,
    cap_text,
    deadline,
    expect_inputs,
    secret,
)
from app.execute.actions.base import ActionContext, ActionResult, Usage
from app.execute.actions.errors import ActionFailed

__all__ = ["BASE_ENV_ALLOWED", "ShellAction"]

#: variables a child may inherit from the runner's environment (nothing else is inherited)
BASE_ENV_ALLOWED = frozenset(
    {"PATH", "HOME", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "TZ", "TMPDIR"}
)
_CHUNK = 65536
_STDERR_IN_MESSAGE = 2000


class ShellAction:
    """Runs ``inputs.run`` once. Outputs: ``stdout`` (stripped), ``stderr``, ``exit_code``.

    ``Usage.runner_minutes`` is the program's wall-clock time (it occupies the runner).
    """

    name = "shell"

    def __init__(
        self,
        *,
        base_env: Mapping[str, str] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._monotonic = monotonic
        source = base_env if base_env is not None else {"PATH": os.defpath}
        self._base_env = {k: v for k, v in source.items() if k in BASE_ENV_ALLOWED}

    def breaker_key(self, inputs: BaseModel) -> str:
        run = getattr(inputs, "run", None) or ["?"]
        return f"shell:{Path(run[0]).name}"

    def environment(self, data: ShellInputs, ctx: ActionContext) -> dict[str, str]:
        """The child's whole environment: allow-listed basics, then ``env``, then secrets."""
        env = dict(self._base_env)
        env.update(data.env)
        for var, name in data.secret_env.items():
            env[var] = secret(ctx, name, purpose=f"environment variable {var}")
        return env

    async def run(self, inputs: BaseModel, ctx: ActionContext) -> ActionResult:
        data = expect_inputs(inputs, ShellInputs, ctx)
        redact = Redactor.for_ctx(ctx)
        env = self.environment(data, ctx)
        shown = " ".join(data.run)
        if ctx.dry_run:
            return ActionResult(log=redact(f"dry run: would run {shown}"))
        cwd = self._cwd(data, ctx)
        started = self._monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *data.run,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
            raise ActionFailed(
                f"step '{ctx.step_id}': cannot start {data.run[0]!r}: {exc.strerror or exc}",
                step=ctx.step_id,
                kind="shell.not_found",
                retryable=False,
                hint="install the program on the runner or fix run[0] (and PATH)",
            ) from exc
        try:
            async with deadline(ctx, f"program {data.run[0]!r}"):
                out, err = await asyncio.gather(
                    _read_capped(proc.stdout, data.max_output_bytes),
                    _read_capped(proc.stderr, data.max_output_bytes),
                )
                code = await proc.wait()
        except BaseException:
            # timeout, cancellation or anything else: the program must not outlive the attempt
            _kill_group(proc)
            with contextlib.suppress(BaseException):
                await asyncio.shield(proc.wait())
            raise
        usage = Usage(runner_minutes=round((self._monotonic() - started) / 60, 4))
        stdout = redact(out[0].decode("utf-8", "replace"))
        stderr = redact(err[0].decode("utf-8", "replace"))
        outputs = {"stdout": stdout.strip(), "stderr": stderr, "exit_code": code}
        notes = [
            f"{name} truncated at {data.max_output_bytes} bytes"
            for name, (_, cut) in (("stdout", out), ("stderr", err))
            if cut
        ]
        log, _ = cap_text(
            "\n".join([f"$ {redact(shown)}  (exit {code})", *notes, stdout, stderr]).strip(),
            LOG_CHARS,
        )
        if code != 0:
            tail = stderr.strip()[-_STDERR_IN_MESSAGE:] or stdout.strip()[-_STDERR_IN_MESSAGE:]
            raise ActionFailed(
                f"step '{ctx.step_id}': {data.run[0]!r} exited with {code}"
                + (f": {tail}" if tail else ""),
                step=ctx.step_id,
                kind="shell.exit",
                retryable=True,
                outputs=outputs,
            )
        return ActionResult(outputs=outputs, usage=usage, log=log)

    @staticmethod
    def _cwd(data: ShellInputs, ctx: ActionContext) -> str | None:
        if data.cwd is None:
            return str(ctx.work_dir) if ctx.work_dir else None
        path = Path(data.cwd)
        if not path.is_absolute() and ctx.work_dir is not None:
            path = ctx.work_dir / path
        return str(path)


async def _read_capped(stream: asyncio.StreamReader | None, limit: int) -> tuple[bytes, bool]:
    """Read a stream to its end, keeping at most ``limit`` bytes (the rest is drained)."""
    if stream is None:
        return b"", False
    kept = bytearray()
    cut = False
    while chunk := await stream.read(_CHUNK):
        room = limit - len(kept)
        if room > 0:
            kept += chunk[:room]
        if len(chunk) > room:
            cut = True
    return bytes(kept), cut


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the child's whole process group (it leads its own session).

    Done even when the leader already exited: a grandchild may still hold the pipes open.
    """
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
