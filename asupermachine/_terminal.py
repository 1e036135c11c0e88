"""The local terminal attached to a guest process, as ``docker run -it`` does: raw mode, keys, resizes.

While attached, the terminal is in raw mode (restored on every way out: the
process ending, an error, a cancellation or a signal that reaches Python),
every key goes to the process's pty (Ctrl-C included: the guest's line
discipline makes it SIGINT), its output comes back as the guest's terminal
draws it, and a resize of the local window resizes the guest's.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import termios
import threading
import tty
from collections.abc import Iterator
from typing import BinaryIO

import anyio

from ._core.agent.process import Process
from ._outcome import ExitStatus

READ_CHUNK = 65536  # a read returns what is there: a key, or a pipe's buffer


def terminal_size(fd: int) -> tuple[int, int]:
    """``(rows, cols)`` of the terminal on ``fd``."""
    size = os.get_terminal_size(fd)
    return size.lines, size.columns


@contextlib.contextmanager
def raw_mode(fd: int) -> Iterator[None]:
    """The terminal on ``fd`` in raw mode for the block, its modes put back however the block ends."""
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def attach(process: Process, *, stdin: int, stdout: BinaryIO) -> ExitStatus:
    """Forward ``stdin`` (a terminal's fd, in raw mode) to ``process`` and its output to ``stdout``,
    and the local window's size changes to its pty, until it ends; returns its status."""
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(send_input, process, stdin)
        if threading.current_thread() is threading.main_thread():  # only it receives signals
            tasks.start_soon(_resizes, process, stdin)
        async for chunk in process.stdout:
            stdout.write(chunk)
            stdout.flush()
        tasks.cancel_scope.cancel()
    return await process.wait()


async def send_input(process: Process, fd: int) -> None:
    """Send what ``fd`` gives (a terminal, pipe, socket or file) to ``process``'s stdin, then its end.

    A terminal, pipe or socket is waited on by the event loop, not read in a
    thread, so a process that ends first leaves no read of ours blocked (which
    would hold the interpreter's exit until the next key). Files and devices such
    as ``/dev/null`` cannot be waited on, and never block: a thread reads them.
    """
    if not _pollable(fd):
        while data := await anyio.to_thread.run_sync(os.read, fd, READ_CHUNK):
            await process.stdin.send(data)
        await process.stdin.aclose()
        return
    blocking = os.get_blocking(fd)
    os.set_blocking(fd, False)
    try:
        while True:
            await anyio.wait_readable(fd)
            try:
                data = os.read(fd, READ_CHUNK)
            except BlockingIOError:
                continue
            if not data:
                await process.stdin.aclose()
                return
            await process.stdin.send(data)
    finally:
        os.set_blocking(fd, blocking)


def _pollable(fd: int) -> bool:
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd)


async def _resizes(process: Process, fd: int) -> None:
    with anyio.open_signal_receiver(signal.SIGWINCH) as changes:
        async for _ in changes:
            await process.resize(*terminal_size(fd))
