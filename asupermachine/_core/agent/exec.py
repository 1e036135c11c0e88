"""Run a process in the guest to completion and collect what it wrote."""

from __future__ import annotations

from dataclasses import dataclass

import anyio
import anyio.abc

from ..._errors import AsupermachineError
from .process import Process


class ExecTimeout(AsupermachineError):
    """The command outlived its timeout; it was killed."""


@dataclass(frozen=True)
class ExecResult:
    """How a command ended: ``exit_code`` if it exited, ``signal`` if a signal killed it."""

    exit_code: int | None
    signal: int | None
    stdout: bytes
    stderr: bytes


async def collect(process: Process, stdin: bytes | None) -> ExecResult:
    """Feed ``stdin``, then close it; gather stdout and stderr until the process ends."""
    stdout, stderr = bytearray(), bytearray()

    async def drain(stream: anyio.abc.ByteReceiveStream, into: bytearray) -> None:
        async for chunk in stream:
            into += chunk

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(drain, process.stdout, stdout)
        tasks.start_soon(drain, process.stderr, stderr)
        if stdin:
            await process.stdin.send(stdin)
        await process.stdin.aclose()
    status = await process.wait()
    return ExecResult(status.exit_code, status.signal, bytes(stdout), bytes(stderr))
