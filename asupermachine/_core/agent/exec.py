"""Run a command in the guest to completion and collect what it wrote, on one connection and one task."""

from __future__ import annotations

import contextlib

import anyio
import anyio.abc

from ..._errors import VsockConnectionReset
from ..._outcome import ExecResult
from .process import exit_status, next_frame, start_command
from .protocol import PIPELINED_INPUT, FrameDecoder, Kind, ProcessRequest, encode_stdin


async def execute(connection: anyio.abc.ByteStream, request: ProcessRequest, stdin: bytes | None = None) -> ExecResult:
    """Run ``request`` through the agent on a fresh ``connection``: feed it ``stdin`` then end its input,
    and gather stdout and stderr until it ends. Raises ``request.refusal(...)`` (:class:`ExecError` for a
    command) if it cannot start."""
    data = stdin or b""
    pipelined = len(data) <= PIPELINED_INPUT
    _, decoder = await start_command(connection, request, encode_stdin(data, end=True) if pipelined else b"")
    if pipelined:
        return await _gather(connection, decoder)
    async with anyio.create_task_group() as feeding:
        feeding.start_soon(_feed, connection, data)
        result = await _gather(connection, decoder)
        feeding.cancel_scope.cancel()  # the command ended: what it did not read has nobody to go to
    return result


async def _feed(connection: anyio.abc.ByteStream, data: bytes) -> None:
    # As subprocess's communicate(): a command that ends without reading all its
    # input is not an error; its exit status says how it ended.
    with contextlib.suppress(VsockConnectionReset):
        await connection.send(encode_stdin(data, end=True))


async def _gather(connection: anyio.abc.ByteStream, decoder: FrameDecoder) -> ExecResult:
    stdout, stderr = bytearray(), bytearray()
    while True:
        frame = await next_frame(connection, decoder)
        if frame.kind is Kind.STDOUT:
            stdout += frame.payload
        elif frame.kind is Kind.STDERR:
            stderr += frame.payload
        else:
            return ExecResult(exit_status(frame), bytes(stdout), bytes(stderr))
