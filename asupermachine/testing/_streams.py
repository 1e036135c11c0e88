"""An in-memory, connected pair of anyio byte streams: a socket pair without sockets."""

from __future__ import annotations

import math

import anyio
import anyio.abc
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

# Reads return at most this many bytes by default, as a vsock stream's do.
DEFAULT_RECEIVE = 65536


class MemoryByteStream(anyio.abc.ByteStream):
    """One end of :func:`memory_stream_pair`.

    What one end sends, the other receives, in order, possibly in other-sized
    pieces. Sends never block (the buffer is unbounded), so two ends that both
    write before reading, as the agent's HELLO and a host's HOSTNAME do, cannot
    deadlock.
    """

    def __init__(self, outgoing: MemoryObjectSendStream[bytes], incoming: MemoryObjectReceiveStream[bytes]) -> None:
        self._outgoing = outgoing
        self._incoming = incoming
        self._pending = b""

    async def send(self, item: bytes) -> None:
        """Queue ``item`` for the other end.

        Raises :class:`anyio.ClosedResourceError` after this end's :meth:`send_eof` or
        :meth:`aclose`, and :class:`anyio.BrokenResourceError` once the other end closed.
        """
        if item:
            await self._outgoing.send(bytes(item))
        else:
            await anyio.lowlevel.checkpoint()

    async def send_eof(self) -> None:
        """End this direction: the other end's :meth:`receive` raises :class:`anyio.EndOfStream`."""
        await self._outgoing.aclose()

    async def receive(self, max_bytes: int = DEFAULT_RECEIVE) -> bytes:
        """Up to ``max_bytes`` bytes from the other end, waiting for some.

        Raises :class:`anyio.EndOfStream` once the other end sent EOF or closed, and
        :class:`anyio.ClosedResourceError` after this end's :meth:`aclose`.
        """
        if not self._pending:
            self._pending = await self._incoming.receive()
        else:
            await anyio.lowlevel.checkpoint()
        data, self._pending = self._pending[:max_bytes], self._pending[max_bytes:]
        return data

    async def aclose(self) -> None:
        """Close both directions: the other end reads EOF, and its sends break."""
        await self._outgoing.aclose()
        await self._incoming.aclose()


def memory_stream_pair() -> tuple[MemoryByteStream, MemoryByteStream]:
    """Two connected byte streams, each the other's peer (like ``trio.testing.memory_stream_pair``)."""
    a_to_b_send, a_to_b_receive = anyio.create_memory_object_stream[bytes](math.inf)
    b_to_a_send, b_to_a_receive = anyio.create_memory_object_stream[bytes](math.inf)
    return MemoryByteStream(a_to_b_send, b_to_a_receive), MemoryByteStream(b_to_a_send, a_to_b_receive)
