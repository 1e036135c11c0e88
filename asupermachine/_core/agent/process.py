"""A process running in the guest, driven over its own agent connection."""

from __future__ import annotations

import contextlib
import signal as signals
import struct
from collections.abc import Callable
from types import TracebackType

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream

from ..._construction import NoPublicConstructor
from ..._errors import AgentProtocolError, VsockConnectionReset
from ..._outcome import ExitStatus
from ..vsock.host import MAX_RECEIVE
from .protocol import (
    ERRNO,
    I32_PAIR,
    U32,
    Frame,
    FrameDecoder,
    Hello,
    Kind,
    ProcessRequest,
    decode_hello,
    encode_frame,
    encode_stdin,
    encode_window,
)

# Output chunks held for a reader before the agent connection stops being read
# (and vsock credit then stops the guest's writes).
OUTPUT_BUFFER_CHUNKS = 64


class _Output(anyio.abc.ByteReceiveStream):
    def __init__(self, receive: MemoryObjectReceiveStream[bytes]) -> None:
        self._receive = receive
        self._pending = b""  # what a smaller ``max_bytes`` left of a chunk

    async def receive(self, max_bytes: int = MAX_RECEIVE) -> bytes:
        if not self._pending:
            try:
                self._pending = await self._receive.receive()
            except anyio.EndOfStream:
                raise anyio.EndOfStream from None
        chunk, self._pending = self._pending[:max_bytes], self._pending[max_bytes:]
        return chunk

    async def aclose(self) -> None:
        await self._receive.aclose()


class _Input(anyio.abc.ByteSendStream):
    def __init__(self, process: Process) -> None:
        self._process = process

    async def send(self, item: bytes) -> None:
        await self._process._send(encode_stdin(item, end=False))

    async def aclose(self) -> None:
        await self._process._send_control(encode_frame(Kind.STDIN))  # empty STDIN: end of input


class Process(metaclass=NoPublicConstructor):
    """A command in the guest: ``stdin``, ``stdout``, ``stderr`` streams, :meth:`wait`, signals.

    On a terminal (``tty``) its output, stderr included, comes on ``stdout`` as a
    terminal shows it, ``stderr`` ends at once, what is sent to ``stdin`` is typed
    (``b"\x03"`` is Ctrl-C), and :meth:`resize` changes the window. Leaving
    ``async with`` (or :meth:`aclose`) closes the connection, which kills the
    command if it still runs.
    """

    def __init__(
        self, connection: anyio.abc.ByteStream, pid: int, lost: Callable[[], BaseException] | None = None,
        *, tty: bool = False,
    ) -> None:
        self.pid = pid
        self.tty = tty
        """Whether the process runs on a terminal."""
        self._lost = lost
        self._connection = connection
        self._send_lock = anyio.Lock()
        out_send, out_receive = anyio.create_memory_object_stream[bytes](OUTPUT_BUFFER_CHUNKS)
        err_send, err_receive = anyio.create_memory_object_stream[bytes](OUTPUT_BUFFER_CHUNKS)
        self._out, self._err = out_send, err_send
        if tty:
            err_send.close()  # a terminal merges stderr into stdout: this stream ends at once
        self.stdin: anyio.abc.ByteSendStream = _Input(self)
        self.stdout: anyio.abc.ByteReceiveStream = _Output(out_receive)
        self.stderr: anyio.abc.ByteReceiveStream = _Output(err_receive)
        self._status: ExitStatus | None = None
        self._failure: BaseException | None = None
        self._done = anyio.Event()

    @classmethod
    async def _start(
        cls,
        connection: anyio.abc.ByteStream,
        request: ProcessRequest,
        *,
        tasks: anyio.abc.TaskGroup,
        lost: Callable[[], BaseException] | None = None,
    ) -> Process:
        """Have the agent spawn ``request`` (see :func:`start_command`) and route its output from a task in ``tasks``.

        ``lost()`` is what :meth:`wait` raises if the connection ends without an exit
        status (the VM went away).
        """
        pid, decoder = await start_command(connection, request)
        process = cls._create(connection, pid, lost, tty=request.tty is not None)
        tasks.start_soon(process._pump, decoder, name=f"process-{pid}")
        return process

    async def _pump(self, decoder: FrameDecoder) -> None:
        """Route the agent's frames to the output streams until the process ends."""
        try:
            async with self._out, self._err:
                while True:
                    frame = await next_frame(self._connection, decoder)
                    if frame.kind is Kind.STDOUT:
                        await self._out.send(frame.payload)
                    elif frame.kind is Kind.STDERR:
                        await self._err.send(frame.payload)
                    else:
                        self._status = exit_status(frame)
                        return
        except anyio.BrokenResourceError:
            self._failure = AgentProtocolError("the reader of this process's output went away")
        except Exception as error:  # the process's failure, surfaced by wait()
            self._failure = error
        finally:
            self._done.set()

    async def wait(self) -> ExitStatus:
        """Wait for the process to end (read its output meanwhile, or it may stall)."""
        await self._done.wait()
        if self._status is None:
            if self._failure is None and self._lost is not None:
                raise self._lost()
            raise self._failure or AgentProtocolError("the process ended without an exit status")
        return self._status

    @property
    def returncode(self) -> int | None:
        """As anyio's and subprocess's: the exit code, or minus the killing signal; None while it runs."""
        return None if self._status is None else self._status.returncode

    async def send_signal(self, signal: int) -> None:
        if self._status is None:
            await self._send_control(encode_frame(Kind.SIGNAL, U32.pack(signal)))

    async def kill(self) -> None:
        await self.send_signal(signals.SIGKILL)

    async def resize(self, rows: int, cols: int) -> None:
        """Change the terminal's size (the process gets SIGWINCH); ``ValueError`` without a terminal."""
        if not self.tty:
            raise ValueError("this process has no terminal to resize: spawn it with tty=True")
        if self._status is None:
            await self._send_control(encode_window(Kind.RESIZE, rows, cols))

    async def _send(self, frame: bytes) -> None:
        async with self._send_lock:
            await self._connection.send(frame)

    async def _send_control(self, frame: bytes) -> None:
        """Send a frame that is moot once the process has ended (its connection may be gone first: the
        agent closes it as the process ends); :meth:`wait` says how it ended."""
        with contextlib.suppress(VsockConnectionReset):
            await self._send(frame)

    async def aclose(self) -> None:
        await self._connection.aclose()

    async def __aenter__(self) -> Process:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.aclose()


async def start_command(
    connection: anyio.abc.ByteStream, request: ProcessRequest, then: bytes = b""
) -> tuple[int, FrameDecoder]:
    """Ask the agent on a fresh ``connection`` to start ``request``; returns its pid and the connection's decoder.

    The request goes out before the agent's greeting is read (it waits in the
    socket), with ``then`` (frames for the command, such as all of its stdin) right
    behind it, so a command is started in one round trip. Raises
    ``request.refusal(...)`` (:class:`ExecError` for a command) if the agent cannot start it.
    """
    await connection.send(request.encode() + then)
    _, decoder = await greet(connection)
    started = await expect_started(connection, decoder, request.refusal)
    return unpack_payload(U32, started, Kind.STARTED)[0], decoder


def exit_status(frame: Frame) -> ExitStatus:
    """How the command ended, from the frame that follows its output; :class:`AgentProtocolError` unless EXITED."""
    if frame.kind is not Kind.EXITED:
        raise AgentProtocolError(f"unexpected {frame.kind.name} frame while the command runs")
    code, signal = unpack_payload(I32_PAIR, frame.payload, Kind.EXITED)
    return ExitStatus(None if code < 0 else code, signal or None)


async def next_frame(connection: anyio.abc.ByteStream, decoder: FrameDecoder) -> Frame:
    while (frame := decoder.next_frame()) is None:
        try:
            decoder.feed(await connection.receive())
        except anyio.EndOfStream:
            raise AgentProtocolError("the agent closed the connection mid-command") from None
    return frame


async def greet(connection: anyio.abc.ByteStream) -> tuple[Hello, FrameDecoder]:
    """Read and check the agent's HELLO; returns it and the connection's decoder."""
    decoder = FrameDecoder()
    return decode_hello(await next_frame(connection, decoder)), decoder


async def expect_started(
    connection: anyio.abc.ByteStream,
    decoder: FrameDecoder,
    refused: Callable[[int, str], Exception],
) -> bytes:
    """The STARTED payload that answers a request; ``refused(errno, detail)`` is raised for ERROR."""
    frame = await next_frame(connection, decoder)
    if frame.kind is Kind.ERROR:
        raise refused(*agent_error(frame))
    if frame.kind is not Kind.STARTED:
        raise AgentProtocolError(f"agent answered a request with {frame.kind.name}")
    return frame.payload


def agent_error(frame: Frame) -> tuple[int, str]:
    """The errno and detail of an ERROR frame; :class:`AgentProtocolError` if it has no errno."""
    if len(frame.payload) < ERRNO.size:
        raise AgentProtocolError(f"an ERROR frame of {len(frame.payload)} bytes holds no errno")
    (errno_value,) = ERRNO.unpack_from(frame.payload)
    return errno_value, frame.payload[ERRNO.size :].decode(errors="replace")


def unpack_payload(layout: struct.Struct, payload: bytes, kind: Kind) -> tuple[int, ...]:
    """``payload`` as ``layout``; :class:`AgentProtocolError` unless it is exactly that long."""
    if len(payload) != layout.size:
        raise AgentProtocolError(f"a {kind.name} frame of {len(payload)} bytes, not {layout.size}")
    return layout.unpack(payload)
