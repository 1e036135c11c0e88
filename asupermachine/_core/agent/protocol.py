"""The agent's wire protocol, host side, sans-IO (the guest side is guest/agent/agent.c).

One vsock connection runs one process. Every frame is a little-endian u32
payload length, u16 kind and u16 zero, then the payload.
"""

from __future__ import annotations

import enum
import os
import struct
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..._environment import check_environment_name
from ..._errors import AgentProtocolError, DiskError, ExecError, GuestFileError
from ..recipe import GuestMount

AGENT_PORT = 1024
PROTOCOL_VERSION = 8
FRAME_HEADER = struct.Struct("<IHH")
MAX_FRAME = 1 << 20
# Host data (a process's stdin, a file's content) goes in STDIN frames of at most this many bytes.
STDIN_CHUNK = 64 * 1024
DEFAULT_TERM = "xterm"  # what docker run -t sets
PIPELINED_INPUT = 64 * 1024
"""Input up to this size goes out with its request: the guest's vsock buffer (256 KiB) holds it whole,
so sending it never waits on a command or file that is not reading yet."""
I32_PAIR = struct.Struct("<ii")
U32 = struct.Struct("<I")
ERRNO = struct.Struct("<i")


class Kind(enum.IntEnum):
    HELLO = 1
    EXEC = 2
    STARTED = 3
    ERROR = 4
    STDIN = 5
    SIGNAL = 6
    STDOUT = 7
    STDERR = 8
    EXITED = 9
    WRITE_FILE = 10
    READ_FILE = 11
    HOSTNAME = 12
    TTY = 13
    RESIZE = 14
    TAR_IN = 15
    TAR_OUT = 16
    MOUNT = 17
    ATTACH = 18
    SYNC = 19
    LIST = 20
    LAYER = 21


class VectorState(enum.IntEnum):
    """Whether guest tasks keep their own AVX registers across context switches (init checks at boot).

    Values are those of ``guest/include/vector_state.h``.
    """

    NO_AVX = 0
    """Guest user code cannot use AVX: nothing to keep."""
    ISOLATED = 1
    """Every task keeps its own vector registers (hardware KVM, or the VMM switches them)."""
    LEAKS = 2
    """Tasks on a vCPU share the registers beyond SSE; the guest runs common runtimes AVX-free."""
    UNCHECKED = 3
    """The check could not run."""


@dataclass(frozen=True)
class Hello:
    """The agent's greeting on every connection."""

    version: int
    vector_state: VectorState


def decode_hello(frame: Frame) -> Hello:
    """Check that ``frame`` greets in this protocol version."""
    if frame.kind is not Kind.HELLO or len(frame.payload) != 2 * U32.size:
        raise AgentProtocolError(f"agent greeted with {frame}, expected a HELLO of protocol {PROTOCOL_VERSION}")
    version, vector_state = struct.unpack("<II", frame.payload)
    if version != PROTOCOL_VERSION:
        raise AgentProtocolError(f"agent speaks protocol {version}, expected {PROTOCOL_VERSION}")
    try:
        return Hello(version, VectorState(vector_state))
    except ValueError:
        raise AgentProtocolError(f"agent reported unknown vector state {vector_state}") from None


@dataclass(frozen=True)
class Frame:
    kind: Kind
    payload: bytes = b""


def encode_frame(kind: Kind, payload: bytes = b"") -> bytes:
    if len(payload) > MAX_FRAME:
        raise ValueError(f"an agent frame carries at most {MAX_FRAME} bytes")
    return FRAME_HEADER.pack(len(payload), kind, 0) + payload


def encode_stdin(data: bytes | memoryview, *, end: bool) -> bytes:
    """``data`` as STDIN frames of at most :data:`STDIN_CHUNK` bytes; with ``end``, the empty one that closes it."""
    view = memoryview(data)
    frames = [encode_frame(Kind.STDIN, bytes(view[at : at + STDIN_CHUNK])) for at in range(0, len(view), STDIN_CHUNK)]
    if end:
        frames.append(encode_frame(Kind.STDIN))
    return b"".join(frames)


class ProcessRequest(Protocol):
    """What the agent runs as a process (STARTED, output, EXITED): a command, or a tree's tar stream."""

    @property
    def tty(self) -> tuple[int, int] | None: ...

    def encode(self) -> bytes:
        """The frames that ask for it."""
        ...

    def refusal(self, code: int, detail: str) -> Exception:
        """What to raise when the agent answers ERROR ``code`` (an errno), ``detail``."""
        ...


@dataclass(frozen=True)
class CommandRequest:
    """A command for the agent to spawn: ``argv``, what it adds to the environment, where and as whom it
    runs (empty: the image's), and ``tty``, the ``(rows, cols)`` of a terminal to run it on."""

    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    workdir: str = ""
    user: str = ""
    tty: tuple[int, int] | None = None

    def encode(self) -> bytes:
        """The frames that ask for it: TTY (setting ``TERM`` unless :attr:`env` has it), then EXEC."""
        if self.tty is None:
            return encode_exec(self.argv, self.env, self.workdir, self.user)
        env = {"TERM": DEFAULT_TERM, **self.env}
        return encode_window(Kind.TTY, *self.tty) + encode_exec(self.argv, env, self.workdir, self.user)

    def refusal(self, code: int, detail: str) -> ExecError:
        return ExecError(f"cannot run {self.argv[0]!r} in the guest: {os.strerror(code)} ({detail})", code)


@dataclass(frozen=True)
class TreeRequest:
    """A tree (or one file) at guest ``path`` as a tar stream: out (TAR_OUT) without ``name``; in (TAR_IN)
    with it, landing at ``path/name`` if ``path`` is a directory, else at ``path``."""

    path: str
    name: str | None = None
    tty: None = None

    def encode(self) -> bytes:
        if self.name is None:
            return encode_frame(Kind.TAR_OUT, encode_path(self.path))
        if self.name in ("", ".", "..") or "/" in self.name:
            raise ValueError(f"{self.name!r} cannot name a tree in a directory")
        return encode_frame(Kind.TAR_IN, encode_path(self.path) + encode_path(self.name))

    def refusal(self, code: int, detail: str) -> GuestFileError:
        return GuestFileError(f"guest path {self.path!r}: {os.strerror(code)} ({detail})", code)


@dataclass(frozen=True)
class AttachRequest:
    """A command the guest runs detached (its connection was reset by a restore), to take over by ``pid``."""

    pid: int
    tty: None = None

    def encode(self) -> bytes:
        if not 0 < self.pid < 2**32:
            raise ValueError(f"{self.pid} is not a process id")
        return encode_frame(Kind.ATTACH, U32.pack(self.pid))

    def refusal(self, code: int, detail: str) -> ExecError:
        return ExecError(f"no process {self.pid} waits in the guest to be attached: {detail}", code)


@dataclass(frozen=True)
class ListRequest:
    """The commands the agent has (LIST): their records come as STDOUT (see :func:`decode_process_list`)."""

    tty: None = None

    def encode(self) -> bytes:
        return encode_frame(Kind.LIST)

    def refusal(self, code: int, detail: str) -> ExecError:
        return ExecError(f"the guest could not list its processes: {os.strerror(code)} ({detail})", code)


@dataclass(frozen=True)
class GuestProcess:
    """A process the agent started for :meth:`Machine.spawn` or :meth:`Machine.exec`, and still has."""

    pid: int
    argv: tuple[str, ...]
    """As the guest's ``/proc`` has it; empty once it ended."""
    attached: bool
    """Whether a caller has it; else a pause or restore cut it off, and :meth:`Machine.attach` takes it up."""
    running: bool
    """False for one that ended cut off: its exit status waits for an attach."""


LIST_RECORD = struct.Struct("<III")  # pid, flags, argv length
LIST_DETACHED, LIST_ENDED = 1, 2


def decode_process_list(data: bytes) -> list[GuestProcess]:
    """LIST's records; :class:`AgentProtocolError` for a malformed one."""
    found, at = [], 0
    while at < len(data):
        if len(data) - at < LIST_RECORD.size:
            raise AgentProtocolError(f"a process record cut short after {len(data) - at} bytes")
        pid, flags, length = LIST_RECORD.unpack_from(data, at)
        at += LIST_RECORD.size
        if length > len(data) - at:
            raise AgentProtocolError(f"a process record's argv of {length} bytes runs past the list")
        words = data[at : at + length].decode(errors="surrogateescape").split("\0")
        at += length
        argv = tuple(words[:-1] if words[-1:] == [""] else words)
        found.append(GuestProcess(pid, argv, not flags & LIST_DETACHED, not flags & LIST_ENDED))
    return found


@dataclass(frozen=True)
class SyncRequest:
    """Have the guest write every filesystem's dirty data through to its disks (SYNC)."""

    tty: None = None

    def encode(self) -> bytes:
        return encode_frame(Kind.SYNC)

    def refusal(self, code: int, detail: str) -> DiskError:
        return DiskError(f"the guest could not sync its disks: {os.strerror(code)} ({detail})")


@dataclass(frozen=True)
class LayerRequest:
    """What the guest changed in its root, as an OCI layer tar on STDOUT (LAYER; guest/include/layer_tar.h)."""

    tty: None = None

    def encode(self) -> bytes:
        return encode_frame(Kind.LAYER)

    def refusal(self, code: int, detail: str) -> GuestFileError:
        return GuestFileError(f"the guest could not write its root's changes: {os.strerror(code)} ({detail})", code)


@dataclass(frozen=True)
class MountRequest:
    """A volume for the agent to mount, on a drive the host may have filled just now (MOUNT)."""

    mount: GuestMount
    tty: None = None

    def encode(self) -> bytes:
        return encode_frame(Kind.MOUNT, encode_path(self.mount.init_option))

    def refusal(self, code: int, detail: str) -> DiskError:
        return DiskError(f"cannot mount a volume at {self.mount.target}: {os.strerror(code)} ({detail})")


def encode_exec(argv: Sequence[str], env: Mapping[str, str], workdir: str, user: str = "") -> bytes:
    """The EXEC frame: counts, then NUL-terminated workdir, user, argv and ``KEY=value`` strings."""
    if not argv:
        raise ValueError("exec needs at least a program name")
    strings = [workdir, user, *argv, *(f"{key}={value}" for key, value in env.items())]
    for text in strings:
        if "\0" in text:
            raise ValueError(f"{text!r} contains a NUL byte")
    for key in env:
        check_environment_name(key)
    body = b"".join(text.encode() + b"\0" for text in strings)
    return encode_frame(Kind.EXEC, U32.pack(len(argv)) + U32.pack(len(env)) + body)


HOSTNAME_MAX = 64


def encode_hostname(name: str) -> bytes:
    """The HOSTNAME frame that names the guest before a connection's request (a restored clone's id)."""
    data = name.encode()
    if not 1 <= len(data) <= HOSTNAME_MAX or b"\0" in data:
        raise ValueError(f"hostname {name!r} must be 1 to {HOSTNAME_MAX} bytes without NUL")
    return encode_frame(Kind.HOSTNAME, data)


WINDOW_SIZE = struct.Struct("<HH")
"""TTY and RESIZE: rows, then columns."""


def encode_window(kind: Kind, rows: int, cols: int) -> bytes:
    """A TTY frame (before EXEC: run it on a pty this size) or a RESIZE frame (the pty's new size)."""
    if kind not in (Kind.TTY, Kind.RESIZE):
        raise ValueError(f"{kind.name} carries no window size")
    if not (1 <= rows <= 0xFFFF and 1 <= cols <= 0xFFFF):
        raise ValueError(f"a terminal of {rows}x{cols}: rows and columns are 1 to 65535")
    return encode_frame(kind, WINDOW_SIZE.pack(rows, cols))


def encode_path(path: str) -> bytes:
    if not path or "\0" in path:
        raise ValueError(f"guest path {path!r} is empty or contains a NUL byte")
    return path.encode() + b"\0"


class FrameDecoder:
    """Bytes from the agent in (:meth:`feed`), whole frames out (:meth:`next_frame`)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._frames: deque[Frame] = deque()

    def feed(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= FRAME_HEADER.size:
            length, kind, _ = FRAME_HEADER.unpack_from(self._buffer)
            if length > MAX_FRAME:
                raise AgentProtocolError(f"agent frame of {length} bytes exceeds {MAX_FRAME}")
            end = FRAME_HEADER.size + length
            if len(self._buffer) < end:
                break
            try:
                frame_kind = Kind(kind)
            except ValueError:
                raise AgentProtocolError(f"unknown agent frame kind {kind}") from None
            self._frames.append(Frame(frame_kind, bytes(self._buffer[FRAME_HEADER.size : end])))
            del self._buffer[:end]

    def next_frame(self) -> Frame | None:
        return self._frames.popleft() if self._frames else None
