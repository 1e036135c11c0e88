"""Run one process through the guest agent over a connected byte stream."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import anyio
import anyio.abc

from .._errors import AsupermachineError
from .protocol import (
    I32_PAIR,
    PROTOCOL_VERSION,
    U32,
    AgentProtocolError,
    Frame,
    FrameDecoder,
    Kind,
    encode_exec,
    encode_frame,
)

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
STDIN_CHUNK = 65536


class ExecError(AsupermachineError):
    """The agent could not start the command (for example, no such program)."""

    def __init__(self, message: str, errno_value: int) -> None:
        super().__init__(message)
        self.errno = errno_value


class ExecTimeout(AsupermachineError):
    """The command outlived its timeout; it was killed."""


@dataclass(frozen=True)
class ExecResult:
    """How a command ended: ``exit_code`` if it exited, ``signal`` if a signal killed it."""

    exit_code: int | None
    signal: int | None
    stdout: bytes
    stderr: bytes


async def run_command(
    stream: anyio.abc.ByteStream,
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str = "",
    stdin: bytes | None = None,
) -> ExecResult:
    """Run ``argv`` over a fresh agent connection and collect its output. Closing kills it."""
    environment = {"PATH": DEFAULT_PATH, "HOME": "/", **(env or {})}
    decoder = FrameDecoder()
    stdout, stderr = bytearray(), bytearray()
    hello = await _next_frame(stream, decoder)
    if hello.kind is not Kind.HELLO or hello.payload != U32.pack(PROTOCOL_VERSION):
        raise AgentProtocolError(f"agent greeted with {hello}, expected protocol {PROTOCOL_VERSION}")
    await stream.send(encode_exec(argv, environment, cwd))
    started = await _next_frame(stream, decoder)
    if started.kind is Kind.ERROR:
        code = int.from_bytes(started.payload[:4], "little", signed=True)
        detail = started.payload[4:].decode(errors="replace")
        raise ExecError(f"cannot run {argv[0]!r} in the guest: {os.strerror(code)} ({detail})", code)
    if started.kind is not Kind.STARTED:
        raise AgentProtocolError(f"agent answered EXEC with {started.kind.name}")
    data = stdin or b""
    for offset in range(0, len(data), STDIN_CHUNK):
        await stream.send(encode_frame(Kind.STDIN, data[offset : offset + STDIN_CHUNK]))
    await stream.send(encode_frame(Kind.STDIN))  # an empty STDIN frame closes the command's stdin
    while True:
        frame = await _next_frame(stream, decoder)
        if frame.kind is Kind.STDOUT:
            stdout += frame.payload
        elif frame.kind is Kind.STDERR:
            stderr += frame.payload
        elif frame.kind is Kind.EXITED:
            code, signal = I32_PAIR.unpack(frame.payload)
            return ExecResult(None if code < 0 else code, signal or None, bytes(stdout), bytes(stderr))
        else:
            raise AgentProtocolError(f"unexpected {frame.kind.name} frame while the command runs")


async def _next_frame(stream: anyio.abc.ByteStream, decoder: FrameDecoder) -> Frame:
    while (frame := decoder.next_frame()) is None:
        try:
            decoder.feed(await stream.receive())
        except anyio.EndOfStream:
            raise AgentProtocolError("the agent closed the connection mid-command") from None
    return frame
