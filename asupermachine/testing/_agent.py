"""A fake guest agent: the agent's wire protocol, answered by Python callables instead of a guest.

It follows ``guest/agent/agent.c`` frame for frame (its header comment is the
protocol), with commands and files kept in memory, and nothing left to timing.
"""

from __future__ import annotations

import errno
import posixpath
import signal as signals
import struct
from collections.abc import Awaitable, Callable, Mapping

import anyio
import anyio.abc

from .._core.agent.protocol import (
    FRAME_HEADER,
    HOSTNAME_MAX,
    I32_PAIR,
    MAX_FRAME,
    PROTOCOL_VERSION,
    U32,
    WINDOW_SIZE,
    Kind,
    VectorState,
    encode_frame,
)
from .._outcome import ExitStatus
from ._streams import memory_stream_pair

CommandResult = tuple[int | ExitStatus, bytes, bytes]
"""What a command handler returns: an exit code (0..255) or an :class:`ExitStatus`, stdout, stderr."""

CommandHandler = Callable[[list[str], dict[str, str], str, str, bytes], CommandResult | Awaitable[CommandResult]]
"""A fake command: ``(argv, env, workdir, user, stdin)`` in, a :data:`CommandResult` out (or awaited)."""

# agent.c reads a pipe (or a file) 64 KiB at a time, so its STDOUT and STDERR frames are at most that.
OUTPUT_CHUNK = 64 * 1024
# agent.c refuses an EXEC with more strings than this in argv or in env.
MAX_EXEC_STRINGS = 4096
HELLO = struct.Struct("<II")  # protocol version, vector state
# signal(7): the signals whose default action leaves a process running (ignore, stop, continue).
NON_TERMINATING_SIGNALS = frozenset(
    {
        signals.SIGCHLD,
        signals.SIGCONT,
        signals.SIGSTOP,
        signals.SIGTSTP,
        signals.SIGTTIN,
        signals.SIGTTOU,
        signals.SIGURG,
        signals.SIGWINCH,
    }
)


class _Refusal(Exception):
    """A request the agent answers with ERROR ``code``, ``detail`` (and then stays idle)."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class _HostFrames:
    """The host's frames off one connection; ``None`` where the agent would end the session."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def next(self) -> tuple[int, bytes] | None:
        """The next ``(kind, payload)``; ``kind`` is a plain int, as unknown kinds are ignored, not refused."""
        while True:
            if len(self._buffer) >= FRAME_HEADER.size:
                length, kind, _ = FRAME_HEADER.unpack_from(self._buffer)
                if length > MAX_FRAME:
                    return None
                end = FRAME_HEADER.size + length
                if len(self._buffer) >= end:
                    payload = bytes(self._buffer[FRAME_HEADER.size : end])
                    del self._buffer[:end]
                    return kind, payload
            try:
                self._buffer += await self._stream.receive()
            except anyio.EndOfStream:
                return None


class FakeAgent:
    """Answers agent connections the way the guest agent does, from ``commands`` and ``files``.

    ``commands`` maps a program name to a handler. An EXEC finds its handler by
    ``argv[0]``, or failing that by its last path component (``/bin/echo`` finds
    ``echo``); a program with neither is refused with ERROR ``ENOENT``, which the
    host raises as :class:`ExecError`. A found command is STARTED with a pid (counting
    up from ``first_pid``) and reads its stdin to the end: its handler is called
    once the host closes stdin, with ``(argv, env, workdir, user, stdin)`` as the
    host sent them (``env`` as a dict, no ``HOME`` added), and its result goes back
    as STDOUT, then STDERR, then EXITED. A SIGNAL that would end a process (not
    ``SIGCHLD``, ``SIGSTOP`` and the like) ends the command before that, killed
    by the signal, without calling the handler.

    ``files`` is the guest's file system, path to content, and is the very dict
    given, so a test can seed it and inspect it: WRITE_FILE replaces an entry (and
    sets :attr:`modes`), READ_FILE answers one or refuses with ``ENOENT``, which the
    host raises as :class:`GuestFileError`. There are no directories or
    permissions: every write succeeds.

    HELLO carries ``version`` and ``vector_state``; give another ``version`` to
    play an agent the host must refuse. :attr:`hostname` is the last name a
    HOSTNAME frame gave, and :attr:`signals` every signal number received, in order.
    A TTY frame before EXEC runs the command on a "terminal": its stderr comes
    as STDOUT after its stdout, as on a pty; :attr:`windows` is every window size
    received (the TTY's, then each RESIZE), in order.
    """

    def __init__(
        self,
        commands: Mapping[str, CommandHandler] | None = None,
        files: dict[str, bytes] | None = None,
        *,
        vector_state: VectorState = VectorState.ISOLATED,
        version: int = PROTOCOL_VERSION,
        first_pid: int = 100,
    ) -> None:
        self.commands: dict[str, CommandHandler] = dict(commands or {})
        self.files: dict[str, bytes] = {} if files is None else files
        self.modes: dict[str, int] = {}
        """Permission bits of each file WRITE_FILE made."""
        self.hostname: str | None = None
        self.signals: list[int] = []
        self.windows: list[tuple[int, int]] = []
        self.vector_state = vector_state
        self.version = version
        self._next_pid = first_pid

    def connect(self, tasks: anyio.abc.TaskGroup) -> anyio.abc.ByteStream:
        """A new connection to this agent: its host end; :meth:`serve` runs the other in ``tasks``."""
        host, guest = memory_stream_pair()
        tasks.start_soon(self.serve, guest, name="fake agent connection")
        return host

    async def serve(self, stream: anyio.abc.ByteStream) -> None:
        """Greet, then answer the one request on ``stream``, as the agent does; closes it at the end.

        Returns when the request is done (EXITED sent), or when the host closes its
        end or sends a frame over ``MAX_FRAME`` bytes (the agent drops such a
        connection). After an ERROR the connection stays open for another request,
        as the agent's does. Exceptions from a handler propagate.
        """
        async with stream:
            frames = _HostFrames(stream)
            tty = False
            try:
                await stream.send(encode_frame(Kind.HELLO, HELLO.pack(self.version, self.vector_state)))
                while (frame := await frames.next()) is not None:
                    kind, payload = frame
                    try:
                        if kind == Kind.EXEC:
                            await self._exec(stream, frames, payload, tty)
                            return
                        if kind == Kind.WRITE_FILE:
                            await self._write_file(stream, frames, payload)
                            return
                        if kind == Kind.READ_FILE:
                            await self._read_file(stream, payload)
                            return
                        if kind == Kind.LIST:  # its commands end with their connections: none to list
                            await stream.send(encode_frame(Kind.STARTED, U32.pack(0)))
                            await stream.send(encode_frame(Kind.EXITED, I32_PAIR.pack(0, 0)))
                            return
                        if kind in (Kind.ATTACH, Kind.MOUNT):
                            raise _Refusal(errno.ESRCH if kind == Kind.ATTACH else errno.ENODEV, "not in a fake")
                    except _Refusal as refusal:
                        await stream.send(encode_frame(Kind.ERROR, error_payload(refusal.code, refusal.detail)))
                        continue
                    if kind == Kind.HOSTNAME and 1 <= len(payload) <= HOSTNAME_MAX and b"\0" not in payload:
                        self.hostname = payload.decode(errors="surrogateescape")
                    if kind == Kind.TTY and len(payload) == WINDOW_SIZE.size:
                        tty = True
                        self.windows.append(WINDOW_SIZE.unpack(payload))
                    # The agent ignores anything else on an idle connection (STDIN, SIGNAL, unknown kinds).
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass  # the host went away mid-answer, which ends the session as it would the agent's

    async def _exec(self, stream: anyio.abc.ByteStream, frames: _HostFrames, payload: bytes, tty: bool) -> None:
        argv, env, workdir, user = parse_exec(payload)
        handler = self.commands.get(argv[0]) or self.commands.get(posixpath.basename(argv[0]))
        if handler is None:
            raise _Refusal(errno.ENOENT, f"exec: {argv[0]}")
        pid, self._next_pid = self._next_pid, self._next_pid + 1
        await stream.send(encode_frame(Kind.STARTED, U32.pack(pid)))
        stdin = bytearray()
        while True:
            frame = await frames.next()
            if frame is None:
                return  # the host closed the connection: the agent kills the process
            kind, data = frame
            if kind == Kind.STDIN:
                if not data:
                    break
                stdin += data
            elif kind == Kind.RESIZE and tty and len(data) == WINDOW_SIZE.size:
                self.windows.append(WINDOW_SIZE.unpack(data))
            elif kind == Kind.SIGNAL and len(data) == U32.size:
                (signo,) = U32.unpack(data)
                self.signals.append(signo)
                if signo and signo not in NON_TERMINATING_SIGNALS:
                    await stream.send(encode_frame(Kind.EXITED, I32_PAIR.pack(-1, signo)))
                    return
        outcome = handler(list(argv), dict(env), workdir, user, bytes(stdin))
        result = outcome if isinstance(outcome, tuple) else await outcome
        status, stdout, stderr = result
        if tty:
            await send_output(stream, Kind.STDOUT, stdout + stderr)
        else:
            await send_output(stream, Kind.STDOUT, stdout)
            await send_output(stream, Kind.STDERR, stderr)
        await stream.send(encode_frame(Kind.EXITED, exited_payload(status)))

    async def _write_file(self, stream: anyio.abc.ByteStream, frames: _HostFrames, payload: bytes) -> None:
        if len(payload) < U32.size:
            raise _Refusal(errno.EINVAL, "short WRITE_FILE")
        (mode,) = U32.unpack_from(payload)
        path = parse_path(payload[U32.size :])
        # The agent opens with O_TRUNC before any content arrives.
        self.files[path], self.modes[path] = b"", mode & 0o7777
        await stream.send(encode_frame(Kind.STARTED, U32.pack(0)))
        content = bytearray()
        while (frame := await frames.next()) is not None:
            kind, data = frame
            if kind == Kind.STDIN:
                if not data:
                    self.files[path] = bytes(content)
                    await stream.send(encode_frame(Kind.EXITED, I32_PAIR.pack(0, 0)))
                    return
                content += data

    async def _read_file(self, stream: anyio.abc.ByteStream, payload: bytes) -> None:
        path = parse_path(payload)
        if path not in self.files:
            raise _Refusal(errno.ENOENT, path)
        await stream.send(encode_frame(Kind.STARTED, U32.pack(0)))
        await send_output(stream, Kind.STDOUT, self.files[path])
        await stream.send(encode_frame(Kind.EXITED, I32_PAIR.pack(0, 0)))


def parse_exec(payload: bytes) -> tuple[list[str], dict[str, str], str, str]:
    """``argv``, ``env``, workdir and user of an EXEC payload; :class:`_Refusal` where agent.c refuses."""
    if len(payload) < 2 * U32.size:
        raise _Refusal(errno.EINVAL, "short EXEC")
    argc, envc = struct.unpack_from("<II", payload)
    if argc == 0 or argc > MAX_EXEC_STRINGS or envc > MAX_EXEC_STRINGS:
        raise _Refusal(errno.EINVAL, "bad EXEC counts")
    strings = payload[2 * U32.size :].split(b"\0")
    if len(strings) <= 2 + argc + envc:  # the last piece is what follows the last NUL
        raise _Refusal(errno.EINVAL, "EXEC strings not terminated")
    text = [s.decode(errors="surrogateescape") for s in strings[: 2 + argc + envc]]
    workdir, user, argv = text[0], text[1], text[2 : 2 + argc]
    env = {}
    for entry in text[2 + argc :]:
        name, _, value = entry.partition("=")
        env[name] = value
    return argv, env, workdir, user


def parse_path(data: bytes) -> str:
    """The path of a file request: one NUL-terminated string, as agent.c insists."""
    if not data or data.find(b"\0") != len(data) - 1:
        raise _Refusal(errno.EINVAL, "path not terminated")
    return data[:-1].decode(errors="surrogateescape")


def error_payload(code: int, detail: str) -> bytes:
    """An ERROR payload: i32 errno, then the detail (agent.c cuts it at 256 bytes)."""
    return struct.pack("<i", code) + detail.encode(errors="surrogateescape")[:256]


def exited_payload(status: int | ExitStatus) -> bytes:
    """An EXITED payload: i32 exit code (-1 if killed), i32 signal (0 if it exited)."""
    if isinstance(status, int):
        status = ExitStatus(status, None)
    if status.exit_code is None:
        if not status.signal:
            raise ValueError("an ExitStatus needs an exit code or a signal")
        return I32_PAIR.pack(-1, status.signal)
    if not 0 <= status.exit_code <= 255:
        raise ValueError(f"exit code {status.exit_code} is not in 0..255, as a process's is")
    return I32_PAIR.pack(status.exit_code, 0)


async def send_output(stream: anyio.abc.ByteStream, kind: Kind, data: bytes) -> None:
    """``data`` as STDOUT or STDERR frames of at most :data:`OUTPUT_CHUNK` bytes (none if empty)."""
    for offset in range(0, len(data), OUTPUT_CHUNK):
        await stream.send(encode_frame(kind, data[offset : offset + OUTPUT_CHUNK]))
