"""The guest's serial console as an async stream that never blocks the guest.

vCPU threads ``feed`` bytes into a bounded buffer; when it is full the oldest
bytes are dropped and counted. One consumer reads chunks or lines with
``async for``. The wakeup crosses threads through an :class:`EventFd`, signalled
only when a reader may be waiting, so the vCPU's hot path stays a lock and an append.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable

import anyio

from .eventfd import EventFd

DEFAULT_CAPACITY = 1 << 20
TAIL_SIZE = 8192

ConsoleInput = Callable[[bytes], int]
"""Offers bytes to the guest; returns how many were taken."""


class Console:
    """Guest console output (and input, through ``send``)."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._capacity = capacity
        self._buffer = bytearray()
        self._tail = bytearray()
        self._lock = threading.Lock()
        self._wakeup = EventFd()
        self._wakeup_armed = True
        self._closed = False
        self.dropped = 0
        """Bytes discarded because no one read them in time."""
        self._input: ConsoleInput | None = None

    # -- producer side (any thread) ---------------------------------------------

    def feed(self, data: bytes) -> None:
        with self._lock:
            self._buffer += data
            overflow = len(self._buffer) - self._capacity
            if overflow > 0:
                del self._buffer[:overflow]
                self.dropped += overflow
            self._tail += data
            if len(self._tail) > 2 * TAIL_SIZE:
                del self._tail[:-TAIL_SIZE]
            wake = self._wakeup_armed
            self._wakeup_armed = False
        if wake:
            self._wakeup.signal()  # a no-op once released: nobody is left to wake

    def close(self) -> None:
        """No more output will come: readers get the rest, then end."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._wakeup.signal()

    def tail(self, limit: int = 4096) -> str:
        """The last ``limit`` bytes the guest printed, read or not, as text."""
        with self._lock:
            return self._tail[-limit:].decode(errors="replace")

    # -- consumer side (the event loop) -------------------------------------------

    async def receive(self) -> bytes:
        """The next chunk of output; raises ``anyio.EndOfStream`` once the VM is gone and all is read."""
        while True:
            with self._lock:
                if self._buffer:
                    chunk = bytes(self._buffer)
                    self._buffer.clear()
                    return chunk
                if self._closed:
                    raise anyio.EndOfStream
                self._wakeup_armed = True
            try:
                await self._wakeup.wait()
            except anyio.ClosedResourceError:
                pass  # released, which closed the console first: the loop ends the stream

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        while True:
            try:
                yield await self.receive()
            except anyio.EndOfStream:
                return

    async def lines(self) -> AsyncIterator[str]:
        """Complete lines of output, decoded, without their line endings."""
        pending = b""
        async for chunk in self:
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for line in complete:
                yield line.rstrip(b"\r").decode(errors="replace")
        if pending:
            yield pending.decode(errors="replace")

    # -- input -----------------------------------------------------------------

    def attach_input(self, sink: ConsoleInput) -> None:
        self._input = sink

    async def send(self, data: bytes) -> None:
        """Type ``data`` into the guest's console, waiting while the UART's FIFO is full."""
        if self._input is None:
            raise RuntimeError("this console has no input attached")
        while data:
            accepted = self._input(data)
            data = data[accepted:]
            if data:
                await anyio.sleep(0.01)

    async def release(self) -> None:
        """Free the eventfd once the VM's threads are gone; a waiting reader sees the end of the stream."""
        self.close()
        self._wakeup.close()
