"""The host's end of a VM's vsock: anyio byte streams over the muxer.

The muxer lives under the vsock device's lock and its events may be raised on a
vCPU thread (a device reset), so they cross into the event loop through a
:class:`MuxInbox` that one task in the VM's task group drains.
"""

from __future__ import annotations

import contextlib
import errno
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..._errors import VsockConnectionReset
from ..eventfd import EventFd
from .connection import Connected, Data, PeerShutdown, Reset
from .muxer import Accepted, MuxEvent, PortPair, VsockMuxer

RX_QUEUE = 0
MAX_RECEIVE = 65536
# Guest connections a listener holds before it is asked to accept; more are reset.
LISTEN_BACKLOG = 64


class _Channel:
    """What the host knows of one connection, on the event loop."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.connected = False
        self.reset = False
        self.eof = False
        self.changed = anyio.Event()

    def wake(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()


class MuxInbox:
    """The muxer's events, posted from any thread (the device's, under its lock), taken on the event loop."""

    def __init__(self) -> None:
        self._events: deque[tuple[PortPair, MuxEvent]] = deque()
        self._lock = threading.Lock()
        self._wakeup = EventFd()

    def post(self, events: list[tuple[PortPair, MuxEvent]]) -> None:
        with self._lock:
            self._events.extend(events)
        self._wakeup.signal()

    @contextlib.asynccontextmanager
    async def watched(self) -> AsyncIterator[Callable[[], Awaitable[list[tuple[PortPair, MuxEvent]]]]]:
        """For the block, a function that takes the events posted since it last did, once there are any.

        It raises ``ClosedResourceError`` once the inbox is closed.
        """
        async with self._wakeup.watched() as next_signal:

            async def take() -> list[tuple[PortPair, MuxEvent]]:
                await next_signal()
                with self._lock:
                    events = list(self._events)
                    self._events.clear()
                return events

            yield take

    def close(self) -> None:
        """Release the eventfd (on the event loop's thread): a take of :meth:`watched` still waiting raises."""
        self._wakeup.close()


class VsockHost:
    """Opens streams to guest ports over the vsock device's muxer; serves its events with :meth:`run`.

    ``device_lock`` is the device's (the muxer is touched only under it), ``kick_rx``
    has the device's RX queue served, and ``inbox`` is where the device posts events.
    """

    def __init__(
        self, muxer: VsockMuxer, inbox: MuxInbox, device_lock: threading.Lock, kick_rx: Callable[[], None]
    ) -> None:
        self.muxer = muxer
        self._inbox = inbox
        self._lock = device_lock
        self._kick_rx = kick_rx
        self._channels: dict[PortPair, _Channel] = {}
        self._backlogs: dict[int, MemoryObjectSendStream[VsockStream]] = {}

    async def run(self) -> None:
        """Dispatch the device's events until cancelled, or until the inbox is closed."""
        try:
            async with self._inbox.watched() as take:
                while True:
                    for pair, event in await take():
                        self._dispatch(pair, event)
        except anyio.ClosedResourceError:
            return

    def _dispatch(self, pair: PortPair, event: MuxEvent) -> None:
        if isinstance(event, Accepted):
            self._accepted(pair)
            return
        channel = self._channels.get(pair)
        if channel is None:
            return
        if isinstance(event, Connected):
            channel.connected = True
        elif isinstance(event, Data):
            channel.buffer += event.payload
        elif isinstance(event, PeerShutdown):
            channel.eof = channel.eof or event.send
        elif isinstance(event, Reset):
            channel.reset = True
        channel.wake()

    async def connect(self, port: int) -> VsockStream:
        """A byte stream to the guest's vsock ``port``; raises :class:`VsockConnectionReset` if refused."""
        with self._lock:
            pair = self.muxer.connect(port)
        channel = self._channels[pair] = _Channel()
        self._kick_rx()
        try:
            while not channel.connected:
                if channel.reset:
                    raise VsockConnectionReset(f"the guest refused a vsock connection to port {port}")
                await channel.changed.wait()
        except BaseException:
            self._forget(pair)
            raise
        return VsockStream(self, pair, channel)

    @contextlib.asynccontextmanager
    async def listen(self, port: int) -> AsyncIterator[VsockListener]:
        """Accept guest connections to the host's ``port`` while the block runs."""
        with self._lock:
            if port in self.muxer.listening:
                raise OSError(errno.EADDRINUSE, f"vsock port {port} is already listened on")
            self.muxer.listening.add(port)
        backlog, accepted = anyio.create_memory_object_stream[VsockStream](LISTEN_BACKLOG)
        self._backlogs[port] = backlog
        try:
            yield VsockListener(port, accepted)
        finally:
            del self._backlogs[port]
            with self._lock:
                self.muxer.listening.discard(port)
            backlog.close()
            with accepted:
                while True:
                    try:
                        unclaimed = accepted.receive_nowait()
                    except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                        break
                    await unclaimed.aclose()

    def _accepted(self, pair: PortPair) -> None:
        channel = self._channels[pair] = _Channel()
        channel.connected = True
        stream = VsockStream(self, pair, channel)
        try:
            self._backlogs[pair[0]].send_nowait(stream)
        except (KeyError, anyio.WouldBlock, anyio.BrokenResourceError):
            self._forget(pair)  # nobody listens any more, or too many wait: reset

    def _send(self, pair: PortPair, data: bytes) -> int:
        with self._lock:
            if pair not in self.muxer.connections:  # reset by the guest; the event may not be dispatched yet
                raise VsockConnectionReset("the guest reset the vsock connection")
            sent = self.muxer.send(pair, data)
        if sent:
            self._kick_rx()
        return sent

    def _consumed(self, pair: PortPair, count: int) -> None:
        with self._lock:
            if pair in self.muxer.connections:
                self.muxer.consumed(pair, count)
            owed = bool(self.muxer.outbound)
        if owed:  # a credit update (once half the buffer is read), or packets still waiting for RX buffers
            self._kick_rx()

    def _shutdown_send(self, pair: PortPair) -> None:
        with self._lock:
            if pair in self.muxer.connections:
                self.muxer.shutdown_send(pair)
        self._kick_rx()

    def _forget(self, pair: PortPair) -> None:
        self._channels.pop(pair, None)
        with self._lock:
            self.muxer.close(pair)
        self._kick_rx()

    def close(self) -> None:
        """Release the inbox (on the event loop's thread): a :meth:`run` still waiting ends."""
        self._inbox.close()


class VsockStream(anyio.abc.ByteStream):
    """A connected vsock stream to a guest port."""

    def __init__(self, host: VsockHost, pair: PortPair, channel: _Channel) -> None:
        self._host = host
        self._pair = pair
        self._channel = channel
        self._closed = False

    async def receive(self, max_bytes: int = MAX_RECEIVE) -> bytes:
        channel = self._channel
        while not channel.buffer:
            if self._closed:
                raise anyio.ClosedResourceError
            if channel.reset:
                raise VsockConnectionReset("the guest reset the vsock connection")
            if channel.eof:
                raise anyio.EndOfStream
            await channel.changed.wait()
        chunk = bytes(channel.buffer[:max_bytes])
        del channel.buffer[:max_bytes]
        self._host._consumed(self._pair, len(chunk))
        return chunk

    async def send(self, item: bytes) -> None:
        view = memoryview(item)
        while view:
            if self._closed:
                raise anyio.ClosedResourceError
            if self._channel.reset:
                raise VsockConnectionReset("the guest reset the vsock connection")
            sent = self._host._send(self._pair, bytes(view))
            view = view[sent:]
            if view:
                await self._channel.changed.wait()  # for a credit update from the guest

    async def send_eof(self) -> None:
        """Half-close: the guest reads end-of-file; the host can still receive."""
        if self._closed:
            raise anyio.ClosedResourceError
        self._host._shutdown_send(self._pair)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._host._forget(self._pair)


class VsockListener(anyio.abc.Listener[VsockStream]):
    """Guest connections to one host port, as :class:`VsockStream` s: :meth:`accept` or :meth:`serve`."""

    def __init__(self, port: int, accepted: MemoryObjectReceiveStream[VsockStream]) -> None:
        self.port = port
        self._accepted = accepted

    async def accept(self) -> VsockStream:
        """The next guest connection (waits for one)."""
        return await self._accepted.receive()

    async def serve(
        self, handler: Callable[[VsockStream], Any], task_group: anyio.abc.TaskGroup | None = None
    ) -> None:
        """Run ``handler(stream)`` as a task for each connection, until cancelled."""
        async with contextlib.AsyncExitStack() as stack:
            if task_group is None:
                task_group = await stack.enter_async_context(anyio.create_task_group())
            while True:
                task_group.start_soon(handler, await self.accept())

    async def aclose(self) -> None:
        await self._accepted.aclose()
