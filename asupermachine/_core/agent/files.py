"""Move whole files in and out of the guest through the agent, one connection per file."""

from __future__ import annotations

import os

import anyio.abc

from ..._errors import AgentProtocolError, GuestFileError
from .process import agent_error, expect_started, greet, next_frame
from .protocol import (
    PIPELINED_INPUT,
    STDIN_CHUNK,
    U32,
    Frame,
    FrameDecoder,
    Kind,
    encode_frame,
    encode_path,
    encode_stdin,
)


async def write_file(connection: anyio.abc.ByteStream, path: str, data: bytes, mode: int) -> None:
    """Create or replace ``path`` in the guest with ``data`` and permission bits ``mode``."""
    request = encode_frame(Kind.WRITE_FILE, U32.pack(mode) + encode_path(path))
    pipelined = len(data) <= PIPELINED_INPUT
    # The request goes out before the agent's greeting is read: it waits in the socket.
    await connection.send(request + encode_stdin(data, end=True) if pipelined else request)
    _, decoder = await greet(connection)
    await _expect_started(connection, decoder, path)
    if not pipelined:
        view = memoryview(data)
        for offset in range(0, len(view), STDIN_CHUNK):
            await connection.send(encode_stdin(view[offset : offset + STDIN_CHUNK], end=False))
        await connection.send(encode_frame(Kind.STDIN))  # end of content
    await _expect_exited(connection, decoder, path)


async def read_file(connection: anyio.abc.ByteStream, path: str) -> bytes:
    """The whole content of ``path`` in the guest."""
    await connection.send(encode_frame(Kind.READ_FILE, encode_path(path)))
    _, decoder = await greet(connection)
    await _expect_started(connection, decoder, path)
    content = bytearray()
    while (frame := await next_frame(connection, decoder)).kind is Kind.STDOUT:
        content += frame.payload
    _check_end(frame, path)
    return bytes(content)


async def _expect_started(connection: anyio.abc.ByteStream, decoder: FrameDecoder, path: str) -> None:
    def refused(code: int, detail: str) -> GuestFileError:
        return GuestFileError(f"guest file {path!r}: {os.strerror(code)}", code)

    await expect_started(connection, decoder, refused)


async def _expect_exited(connection: anyio.abc.ByteStream, decoder: FrameDecoder, path: str) -> None:
    _check_end(await next_frame(connection, decoder), path)


def _check_end(frame: Frame, path: str) -> None:
    if frame.kind is Kind.EXITED:
        return
    if frame.kind is Kind.ERROR:
        code, detail = agent_error(frame)
        raise GuestFileError(f"guest file {path!r}: {detail}: {os.strerror(code)}", code)
    raise AgentProtocolError(f"unexpected {frame.kind.name} frame in a file transfer")
