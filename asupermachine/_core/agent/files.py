"""Move files in and out of the guest through the agent, one connection per file, whole or streamed."""

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
    pipelined = len(data) <= PIPELINED_INPUT
    writer = await open_writer(connection, path, mode, then=encode_stdin(data, end=False) if pipelined else b"")
    if not pipelined:
        await writer.send(data)
    await writer.aclose()


async def read_file(connection: anyio.abc.ByteStream, path: str) -> bytes:
    """The whole content of ``path`` in the guest."""
    content = bytearray()
    async for chunk in await open_reader(connection, path):
        content += chunk
    return bytes(content)


async def open_writer(connection: anyio.abc.ByteStream, path: str, mode: int, then: bytes = b"") -> GuestFileWriter:
    """Create or replace ``path`` in the guest with permission bits ``mode``; its content is sent to the writer.

    The request goes out before the agent's greeting is read (it waits in the
    socket), with ``then`` (content frames small enough for the guest to buffer).
    """
    await connection.send(encode_frame(Kind.WRITE_FILE, U32.pack(mode) + encode_path(path)) + then)
    _, decoder = await greet(connection)
    await _expect_started(connection, decoder, path)
    return GuestFileWriter(connection, decoder, path)


async def open_reader(connection: anyio.abc.ByteStream, path: str) -> GuestFileReader:
    """``path`` in the guest, opened to read its content as it comes."""
    await connection.send(encode_frame(Kind.READ_FILE, encode_path(path)))
    _, decoder = await greet(connection)
    await _expect_started(connection, decoder, path)
    return GuestFileReader(connection, decoder, path)


class GuestFileWriter(anyio.abc.ByteSendStream):
    """The content of a guest file, sent as it comes; :meth:`aclose` ends it and waits until the guest has it all.

    :meth:`aclose` raises :class:`GuestFileError` if the guest could not write it.
    """

    def __init__(self, connection: anyio.abc.ByteStream, decoder: FrameDecoder, path: str) -> None:
        self._connection = connection
        self._decoder = decoder
        self._path = path
        self._closed = False

    async def send(self, item: bytes) -> None:
        view = memoryview(item)
        for offset in range(0, len(view), STDIN_CHUNK):
            await self._connection.send(encode_stdin(view[offset : offset + STDIN_CHUNK], end=False))

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._connection.send(encode_frame(Kind.STDIN))  # end of content
            _check_end(await next_frame(self._connection, self._decoder), self._path)
        finally:
            await self._connection.aclose()


class GuestFileReader(anyio.abc.ByteReceiveStream):
    """The content of a guest file as it comes; raises :class:`GuestFileError` if the guest cannot read on."""

    def __init__(self, connection: anyio.abc.ByteStream, decoder: FrameDecoder, path: str) -> None:
        self._connection = connection
        self._decoder = decoder
        self._path = path
        self._pending = b""  # what a smaller ``max_bytes`` left of a frame
        self._ended = False

    async def receive(self, max_bytes: int = STDIN_CHUNK) -> bytes:
        while not self._pending:
            if self._ended:
                raise anyio.EndOfStream
            frame = await next_frame(self._connection, self._decoder)
            if frame.kind is not Kind.STDOUT:
                _check_end(frame, self._path)
                self._ended = True
            self._pending = frame.payload if frame.kind is Kind.STDOUT else b""
        chunk, self._pending = self._pending[:max_bytes], self._pending[max_bytes:]
        return chunk

    async def aclose(self) -> None:
        await self._connection.aclose()


async def _expect_started(connection: anyio.abc.ByteStream, decoder: FrameDecoder, path: str) -> None:
    def refused(code: int, detail: str) -> GuestFileError:
        return GuestFileError(f"guest file {path!r}: {os.strerror(code)}", code)

    await expect_started(connection, decoder, refused)


def _check_end(frame: Frame, path: str) -> None:
    if frame.kind is Kind.EXITED:
        return
    if frame.kind is Kind.ERROR:
        code, detail = agent_error(frame)
        raise GuestFileError(f"guest file {path!r}: {detail}: {os.strerror(code)}", code)
    raise AgentProtocolError(f"unexpected {frame.kind.name} frame in a file transfer")
