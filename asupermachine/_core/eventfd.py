"""A Linux eventfd: any thread signals it, one async task waits for it, KVM may hold its fd.

The kernel keeps a counter: :meth:`EventFd.signal` adds one, and a wait returns
once the counter is non-zero and takes it all, so signals before a wait are not
lost and several merge into one wake-up.
"""

from __future__ import annotations

import os
import threading

import anyio


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

    def fileno(self) -> int:
        """The fd, for KVM (an irqfd or ioeventfd) or ``select``; -1 once closed."""
        return self._fd

    def signal(self) -> None:
        """Wake the waiter, now or at its next :meth:`wait`. Thread-safe; never blocks."""
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

    def close(self) -> None:
        """Wake a waiting task with ``anyio.ClosedResourceError`` and close the fd. Idempotent.

        Call it on the event loop's thread while a task may be waiting; from any
        thread otherwise.
        """
        with self._lock:
            fd, self._fd = self._fd, -1
        if fd < 0:
            return
        if self._waiters:
            anyio.notify_closing(fd)
        os.close(fd)
