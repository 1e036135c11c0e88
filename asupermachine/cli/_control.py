"""``asupermachine pause ID`` from another terminal: a CLI that runs a machine answers on a unix socket.

While a CLI process runs a machine it listens on ``<id>.sock`` in a directory only
its user may enter (``$XDG_RUNTIME_DIR/asupermachine``, else ``/tmp/asupermachine-<uid>``).
``pause`` pauses the machine there and answers once it is saved; ``ps`` is answered
so that ``asupermachine ps`` can tell a running machine from a stale socket.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.abc

from .._errors import AsupermachineError
from .._machine import Machine

SOCKET_SUFFIX = ".sock"
MAX_LINE = 256
REQUEST_DEADLINE = 5.0  # seconds a client may take to say what it wants
PAUSE = b"pause"
PING = b"ps"


def control_dir() -> Path:
    """The directory of the sockets, made if missing; raises ``PermissionError`` if others could enter it."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    path = Path(runtime, "asupermachine") if runtime else Path(f"/tmp/asupermachine-{os.getuid()}")
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    status = path.lstat()
    if not stat.S_ISDIR(status.st_mode) or status.st_uid != os.getuid() or status.st_mode & 0o077:
        raise PermissionError(f"{path} must be a directory of this user's that no one else may enter")
    return path


class Control:
    """A held machine's control: :attr:`scope` is cancelled once the machine was paused from outside."""

    def __init__(self) -> None:
        self.scope = anyio.CancelScope()
        self.paused = False
        self.pausing = anyio.Lock()
        """Held from a pause request to its answer: the block's end waits for it."""


@contextlib.asynccontextmanager
async def controlled(vm: Machine, *, pause_on_signal: bool) -> AsyncIterator[Control]:
    """Answer ``pause`` (and, with ``pause_on_signal``, SIGINT and SIGTERM) for ``vm`` while the block runs.

    Run the block's work inside ``control.scope``: a pause cancels it.
    """
    control = Control()
    path = control_dir() / f"{vm.id}{SOCKET_SUFFIX}"
    path.unlink(missing_ok=True)  # left by a process that died with the same machine
    listener = await anyio.create_unix_listener(path)

    async def pause() -> bytes:
        try:
            await vm.pause()
        except AsupermachineError as error:
            return f"error {error}\n".encode()
        control.paused = True
        return b"paused\n"

    async def answer(stream: anyio.abc.ByteStream) -> None:
        async with stream:
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                request = b""
                with anyio.move_on_after(REQUEST_DEADLINE):
                    request = (await stream.receive(MAX_LINE)).strip()
                if request != PAUSE:
                    await stream.send(b"running\n")
                    return
                async with control.pausing:
                    await stream.send(await pause())
        if control.paused:
            control.scope.cancel()  # once answered: that ends the block

    async def on_signals(*, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()  # the block runs once a signal pauses the machine
            async for _ in signals:
                async with control.pausing:
                    await pause()
                control.scope.cancel()
                return

    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(listener.serve, answer)
            if pause_on_signal:
                await tasks.start(on_signals)
            try:
                yield control
            finally:
                with anyio.CancelScope(shield=True):
                    async with control.pausing:  # a pause under way is answered first
                        tasks.cancel_scope.cancel()
    finally:
        path.unlink(missing_ok=True)
        with anyio.CancelScope(shield=True):
            await listener.aclose()


async def ask(machine_id: str, request: bytes) -> str | None:
    """Send ``request`` to the CLI that runs ``machine_id``; its answer, or None if none runs it here."""
    path = control_dir() / f"{machine_id}{SOCKET_SUFFIX}"
    try:
        stream = await anyio.connect_unix(path)
    except (FileNotFoundError, ConnectionRefusedError):
        path.unlink(missing_ok=True)  # stale: its process died
        return None
    async with stream:
        await stream.send(request + b"\n")
        answer = b""
        with contextlib.suppress(anyio.EndOfStream):
            while not answer.endswith(b"\n"):
                answer += await stream.receive(MAX_LINE)
    return answer.decode(errors="replace").strip()


async def running_ids() -> list[str]:
    """The machines CLI processes of this user run now."""
    found = []
    for path in sorted(control_dir().glob(f"*{SOCKET_SUFFIX}")):
        machine_id = path.name.removesuffix(SOCKET_SUFFIX)
        if await ask(machine_id, PING) is not None:
            found.append(machine_id)
    return found
