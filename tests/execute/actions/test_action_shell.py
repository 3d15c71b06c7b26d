"""``shell``: argv without a shell, env allow-list, secrets, caps, and a timeout that kills."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from action_helpers import make_ctx, run

from app.actions.builtin import ShellInputs
from app.errors import StepFailed
from app.execute.actions.errors import ActionFailed
from app.execute.actions.shell import ShellAction

PY = sys.executable
BASE_ENV = {
    "PATH": os.defpath,
    "HOME": "/home/runner",
    "LANG": "C.UTF-8",
    "GITHUB_TOKEN": "ghs_runner_own_token",
    "AWS_SECRET_ACCESS_KEY": "runner-aws-key",
}


def shell(**kwargs) -> ShellAction:
    return ShellAction(base_env=kwargs.pop("base_env", BASE_ENV))


def py(code: str, *args: str, **kwargs) -> ShellInputs:
    return ShellInputs(run=[PY, "-c", code, *args], **kwargs)


def test_stdout_is_stripped_and_exit_code_reported():
    result = run(shell().run(py("print('  hello  ')"), make_ctx()))
    assert result.outputs == {"stdout": "hello", "stderr": "", "exit_code": 0}


def test_inputs_are_never_interpreted_by_a_shell():
    hostile = "$(touch pwned); rm -rf / `id` && echo $HOME"
    result = run(shell().run(py("import sys; print(sys.argv[1])", hostile), make_ctx()))
    assert result.outputs["stdout"] == hostile


def test_child_environment_is_an_allow_list():
    code = "import json, os; print(json.dumps(dict(os.environ)))"
    inputs = py(code, env={"REGION": "eu"}, secret_env={"DB_PASSWORD": "DB_PASS"})
    ctx = make_ctx(secrets={"DB_PASS": "s3cr3t-value", "OTHER": "x"})
    env = ShellAction(base_env=BASE_ENV).environment(inputs, ctx)
    assert env == {
        "PATH": os.defpath,
        "HOME": "/home/runner",
        "LANG": "C.UTF-8",
        "REGION": "eu",
        "DB_PASSWORD": "s3cr3t-value",
    }


def test_runner_credentials_never_reach_the_child():
    code = "import os; print(sorted(k for k in os.environ if k != 'LC_CTYPE'))"
    result = run(shell().run(py(code), make_ctx()))
    names = result.outputs["stdout"]
    assert "GITHUB_TOKEN" not in names and "AWS_SECRET_ACCESS_KEY" not in names
    assert "PATH" in names


def test_secret_values_are_redacted_from_captured_output():
    code = (
        "import os, sys; print('pw=' + os.environ['PW']); print(os.environ['PW'], file=sys.stderr)"
    )
    ctx = make_ctx(secrets={"DB_PASS": "hunter2-long"})
    result = run(shell().run(py(code, secret_env={"PW": "DB_PASS"}), ctx))
    assert result.outputs["stdout"] == "pw=***"
    assert result.outputs["stderr"].strip() == "***"
    assert "hunter2-long" not in result.log


def test_secret_values_are_redacted_from_failure_messages():
    code = "import os, sys; sys.exit('bad password ' + os.environ['PW'])"
    ctx = make_ctx(secrets={"DB_PASS": "hunter2-long"})
    with pytest.raises(ActionFailed) as info:
        run(shell().run(py(code, secret_env={"PW": "DB_PASS"}), ctx))
    assert "hunter2-long" not in str(info.value)
    assert "bad password ***" in str(info.value)


def test_missing_secret_fails_before_running_anything(tmp_path: Path):
    marker = tmp_path / "ran"
    inputs = py(f"open({str(marker)!r}, 'w')", secret_env={"PW": "DB_PASS"})
    with pytest.raises(StepFailed, match="secret 'DB_PASS'") as info:
        run(shell().run(inputs, make_ctx()))
    assert info.value.kind == "secret.missing" and not info.value.retryable
    assert not marker.exists()


def test_nonzero_exit_is_shell_exit_with_outputs():
    code = "import sys; print('partial'); print('boom', file=sys.stderr); sys.exit(3)"
    with pytest.raises(ActionFailed, match="exited with 3: boom") as info:
        run(shell().run(py(code), make_ctx()))
    assert info.value.kind == "shell.exit" and info.value.retryable
    assert info.value.outputs == {"stdout": "partial", "stderr": "boom\n", "exit_code": 3}


def test_unknown_program_is_not_retryable():
    with pytest.raises(StepFailed, match="cannot start 'no-such-program-xyz'") as info:
        run(shell().run(ShellInputs(run=["no-such-program-xyz"]), make_ctx()))
    assert info.value.kind == "shell.not_found" and not info.value.retryable


def test_output_is_capped_and_the_cut_is_logged():
    code = "import sys; sys.stdout.write('x' * 200000); sys.stderr.write('y' * 10)"
    result = run(shell().run(py(code, max_output_bytes=1000), make_ctx()))
    assert result.outputs["stdout"] == "x" * 1000
    assert result.outputs["stderr"] == "y" * 10
    assert "stdout truncated at 1000 bytes" in result.log


def test_log_is_capped_even_when_outputs_are_large():
    code = "import sys; sys.stdout.write('x' * 300000)"
    result = run(shell().run(py(code), make_ctx()))
    assert len(result.outputs["stdout"]) == 300000
    assert len(result.log) == 65536


def test_cwd_is_relative_to_the_work_dir(tmp_path: Path):
    (tmp_path / "sub").mkdir()
    inputs = py("import os; print(os.getcwd())", cwd="sub")
    result = run(shell().run(inputs, make_ctx(work_dir=tmp_path)))
    assert Path(result.outputs["stdout"]) == (tmp_path / "sub").resolve()


def test_dry_run_runs_nothing(tmp_path: Path):
    marker = tmp_path / "ran"
    result = run(shell().run(py(f"open({str(marker)!r}, 'w')"), make_ctx(dry_run=True)))
    assert "dry run" in result.log and not marker.exists()


# A parent that starts a grandchild in the same process group, records both pids, then hangs.
SPAWNER = """
import subprocess, sys, time, os
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(f"{os.getpid()} {child.pid}")
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


async def _wait_for_file(path: Path) -> list[int]:
    while not path.exists():
        await asyncio.sleep(0.01)
    return [int(p) for p in path.read_text().split()]


async def _settle(pids: list[int]) -> list[int]:
    """SIGKILL is asynchronous: give the kernel a moment, bounded, then report survivors."""
    for _ in range(500):
        if not any(_alive(p) for p in pids):
            break
        await asyncio.sleep(0.01)
    return [p for p in pids if _alive(p)]


@pytest.mark.skipif(not Path("/proc").exists(), reason="needs /proc")
def test_timeout_kills_the_whole_process_group(tmp_path: Path):
    pidfile = tmp_path / "pids"

    async def scenario() -> tuple[list[int], BaseException]:
        task = asyncio.create_task(shell().run(py(SPAWNER, str(pidfile)), make_ctx(timeout=1.0)))
        pids = await _wait_for_file(pidfile)
        assert all(_alive(p) for p in pids)
        try:
            await task
        except StepFailed as exc:
            return await _settle(pids), exc
        raise AssertionError("the step should have timed out")

    survivors, exc = asyncio.run(scenario())
    assert isinstance(exc, StepFailed) and exc.kind == "timeout" and exc.retryable
    assert survivors == []


@pytest.mark.skipif(not Path("/proc").exists(), reason="needs /proc")
def test_cancellation_kills_the_whole_process_group(tmp_path: Path):
    pidfile = tmp_path / "pids"

    async def scenario() -> list[int]:
        task = asyncio.create_task(shell().run(py(SPAWNER, str(pidfile)), make_ctx(timeout=600)))
        pids = await _wait_for_file(pidfile)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await _settle(pids)

    assert asyncio.run(scenario()) == []


def test_breaker_key_names_the_program():
    assert shell().breaker_key(ShellInputs(run=["/usr/bin/kubectl", "get"])) == "shell:kubectl"


def test_runner_minutes_are_the_programs_wall_clock_time():
    ticks = iter([100.0, 190.0])
    action = ShellAction(base_env=BASE_ENV, monotonic=lambda: next(ticks))
    result = run(action.run(py("pass"), make_ctx()))
    assert result.usage.runner_minutes == 1.5


# The leader exits at once; its background child keeps the output pipe open and lives on.
DAEMONISER = """
import subprocess, sys, os
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(f"{child.pid}")
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
"""


@pytest.mark.skipif(not Path("/proc").exists(), reason="needs /proc")
def test_background_child_of_an_exited_program_is_killed_at_the_timeout(tmp_path: Path):
    pidfile = tmp_path / "pids"

    async def scenario() -> tuple[list[int], str]:
        task = asyncio.create_task(shell().run(py(DAEMONISER, str(pidfile)), make_ctx(timeout=1.0)))
        pids = await _wait_for_file(pidfile)
        with pytest.raises(StepFailed) as info:
            await task
        return await _settle(pids), info.value.kind

    survivors, kind = asyncio.run(scenario())
    assert kind == "timeout"
    assert survivors == []
