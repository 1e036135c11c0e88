"""Run a process in the guest to completion and collect what it wrote."""

from __future__ import annotations

import contextlib

import anyio
import anyio.abc

from ..._errors import VsockConnectionReset
from ..._outcome import ExecResult
from .process import Process


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
            # As subprocess's communicate(): a process that ends without reading all
            # its input is not an error; wait() says how it ended.
            with contextlib.suppress(VsockConnectionReset):
                await process.stdin.send(stdin)
        await process.stdin.aclose()
    status = await process.wait()
    return ExecResult(status, bytes(stdout), bytes(stderr))
