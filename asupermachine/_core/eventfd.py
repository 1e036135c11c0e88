"""A Linux eventfd: any thread signals it, one async task waits for it, KVM may hold its fd.

The kernel keeps a counter: :meth:`EventFd.signal` adds one, and a wait returns
once the counter is non-zero and takes it all, so signals before a wait are not
lost and several merge into one wake-up.

A task that waits again and again (a virtqueue's server) does so inside
:meth:`EventFd.watched`: under asyncio the fd then stays registered with the event
loop, and a signal from the loop's own thread wakes it without a system call.
Registering the fd for every wait and writing it for every in-loop signal was a
fifth of an exec's host time in the L1, where each system call is dear.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import anyio
import sniffio


@dataclass(frozen=True)
class _Watch:
    """The fd's registration with an asyncio loop, while a task watches it."""

    thread: int
    loop: asyncio.AbstractEventLoop
    arrived: asyncio.Event


class EventFd:
    """A non-blocking, close-on-exec eventfd, opened on construction.

    One task waits at a time. Closing makes a wait that is in progress, and any
    later one, raise ``anyio.ClosedResourceError``; signals after closing are
    ignored, as nobody is left to wake.
    """

    def __init__(self) -> None:
        self._fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        # Held around every write so that close never frees an fd number a signal
        # is about to write to (the number could name another file by then).
        self._lock = threading.Lock()
        self._waiters = 0  # a count, so that a refused second waiter leaves the first one counted
        self._watch: _Watch | None = None

    def fileno(self) -> int:
        """The fd, for KVM (an irqfd or ioeventfd) or ``select``; -1 once closed."""
        return self._fd

    def signal(self) -> None:
        """Wake the waiter, now or at its next :meth:`wait`. Thread-safe; never blocks."""
        watch = self._watch
        if watch is not None and watch.thread == threading.get_ident():
            watch.arrived.set()  # the watcher's own loop: no need to go through the kernel
            return
        with self._lock:
            if self._fd < 0:
                return
            try:
                os.eventfd_write(self._fd, 1)
            except BlockingIOError:
                pass  # the counter is at its maximum: the waiter wakes anyway

    async def wait(self) -> None:
        """Return once signalled, taking the count.

        Raises ``anyio.ClosedResourceError`` if closed before or while waiting, and
        ``anyio.BusyResourceError`` if another task is already waiting.
        """
        while True:
            fd = self._fd
            if fd < 0:
                raise anyio.ClosedResourceError
            self._waiters += 1
            try:
                await anyio.wait_readable(fd)
            finally:
                self._waiters -= 1
            if self._fd != fd:
                raise anyio.ClosedResourceError  # closed after the wake-up was scheduled
            try:
                os.eventfd_read(fd)
            except BlockingIOError:
                continue  # a spurious wake-up: nothing to take
            return

    @contextlib.asynccontextmanager
    async def watched(self) -> AsyncIterator[Callable[[], Awaitable[None]]]:
        """For the block, a function to await each signal as :meth:`wait` does, more cheaply under asyncio.

        Raises ``anyio.ClosedResourceError`` once closed, ``anyio.BusyResourceError``
        if another task waits.
        """
        if sniffio.current_async_library() != "asyncio":
            yield self.wait
            return
        fd = self._fd
        if fd < 0:
            raise anyio.ClosedResourceError
        if self._watch is not None or self._waiters:
            raise anyio.BusyResourceError("waiting on")
        loop = asyncio.get_running_loop()
        watch = _Watch(threading.get_ident(), loop, asyncio.Event())

        def readable() -> None:
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(fd)
            watch.arrived.set()

        async def next_signal() -> None:
            await watch.arrived.wait()
            watch.arrived.clear()
            if self._fd != fd:
                raise anyio.ClosedResourceError

        loop.add_reader(fd, readable)
        self._watch = watch
        try:
            yield next_signal
        finally:
            self._watch = None
            if self._fd == fd:
                loop.remove_reader(fd)

    def close(self) -> None:
        """Wake a waiting task with ``anyio.ClosedResourceError`` and close the fd. Idempotent.

        Call it on the event loop's thread while a task may be waiting; from any
        thread otherwise.
        """
        with self._lock:
            fd, self._fd = self._fd, -1
        if fd < 0:
            return
        watch = self._watch
        if watch is not None:
            watch.loop.remove_reader(fd)
            watch.arrived.set()
        if self._waiters:
            anyio.notify_closing(fd)
        os.close(fd)
