"""Reading a guest command's output in tests: its exit status first, so a crash reads as a crash."""

from __future__ import annotations

from asupermachine import ExecResult, Machine


def stdout_of(result: ExecResult) -> bytes:
    """``result.stdout`` of a command that exited 0; otherwise fail with its status and stderr."""
    assert result.exit_code == 0 and result.signal is None, f"guest command failed: {result}"
    return result.stdout


async def shell(vm: Machine, script: str) -> str:
    """What ``sh -c script`` printed in ``vm``; it must exit 0."""
    return stdout_of(await vm.exec(["sh", "-c", script])).decode()
