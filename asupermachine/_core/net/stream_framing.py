"""qemu's "stream" netdev framing, as passt speaks it on its socket: sans-IO.

Each Ethernet frame goes after its length, four bytes big-endian, and nothing
else is on the stream (no virtio-net header, no checksum). qemu reads it in
``net/stream.c`` with ``net_fill_rstate``; passt in ``tap.c``.

Decoding is done in the decoder's own buffer so that a socket can
``recv_into`` it and the frames come out as views of what was received, never
copied: :meth:`EthernetStreamDecoder.receive_buffer` then :meth:`EthernetStreamDecoder.received`.
:meth:`EthernetStreamDecoder.feed` takes bytes from anywhere instead.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from ..._errors import NetBackendError

BytesLike = bytes | bytearray | memoryview

FRAME_LENGTH = struct.Struct(">I")
"""The length that goes before each frame: bytes of the frame, big-endian (qemu ``net_fill_rstate``)."""

ETH_HLEN = 14  # Linux include/uapi/linux/if_ether.h: destination, source, EtherType
ETH_MAX_MTU = 65535  # Linux include/uapi/linux/if_ether.h: passt's bound on a guest's frame (tap.c)

MIN_FRAME_LENGTH = ETH_HLEN
"""Bytes of the shortest frame either side sends: an Ethernet header, as passt drops anything shorter."""
ATOMIC_SEND_BYTES = 32 << 10
"""Bytes one ``sendmsg`` on a Unix stream socket puts in a single buffer of the socket's queue, which a
reader takes whole: Linux cuts a send into buffers of up to ``SKB_MAX_HEAD(0) + UNIX_SKB_FRAGS_SZ``
(a little over 32 KiB; ``unix_stream_sendmsg`` in net/unix/af_unix.c), and a non-blocking send of one
buffer's worth either queues it all or fails with EAGAIN."""
MAX_SENT_FRAME_LENGTH = ATOMIC_SEND_BYTES - FRAME_LENGTH.size
"""Bytes of the longest frame sent to passt: one that goes, with its length, in a single buffer of the
socket, so passt never reads a frame torn in two. passt before 2024 (Debian 12's 2023-03 build) loses its
place in the stream for good when it does: ``tap_handler_passt`` gives up on a frame whose rest is not
there yet and drops a length split across two reads. Sent one frame per ``sendmsg``
(:meth:`..passt.PasstLink.send_frames`), frames this short always reach it whole."""
MAX_RECEIVED_FRAME_LENGTH = ETH_MAX_MTU + ETH_HLEN
"""Bytes of the longest frame passt builds: an IP packet of up to 65535 bytes (its ``udp4_l2_buf_t`` and
``udp6_l2_buf_t`` hold that much, and passt does not fragment a big datagram to the MTU) behind an Ethernet
header. A longer length means the stream is out of step, not that passt sent a jumbo frame."""

DEFAULT_CAPACITY = 256 * 1024
"""Bytes of a decoder's buffer unless told: a few maximal frames per ``recv_into``."""
MIN_CAPACITY = 2 * (FRAME_LENGTH.size + MAX_RECEIVED_FRAME_LENGTH)


class EthernetStreamDecoder:
    """Bytes of the stream in, whole frames out.

    Frames come out as :class:`memoryview` slices of the decoder's buffer, valid
    until the next call to :meth:`receive_buffer` or :meth:`feed`: hand them on
    (or copy them) first. A length outside ``[MIN_FRAME_LENGTH,
    MAX_RECEIVED_FRAME_LENGTH]`` raises :class:`NetBackendError` as soon as its four
    bytes are in, and every later call raises it again: the stream cannot be
    resynchronised.
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < MIN_CAPACITY:
            raise ValueError(f"a frame decoder needs at least {MIN_CAPACITY} bytes of buffer, not {capacity}")
        self._buffer = bytearray(capacity)
        self._view = memoryview(self._buffer)
        self._start = 0  # the first byte not yet handed out as a frame
        self._end = 0  # one past the last byte received
        self._offset = 0  # bytes of the stream consumed before _start, for error messages
        self._error: NetBackendError | None = None

    @property
    def pending(self) -> int:
        """Bytes received of a frame (or length) not yet whole; 0 at a frame boundary."""
        return self._end - self._start

    def receive_buffer(self) -> memoryview:
        """Free space to receive the stream's next bytes into (``sock.recv_into``), then call :meth:`received`.

        Invalidates the frames handed out before. It moves an incomplete frame to
        the front of the buffer when the space behind it runs short, so the only
        bytes ever copied are those of one partial frame now and then.
        """
        self._raise_if_broken()
        if self._start == self._end:
            self._start = self._end = 0
        elif len(self._buffer) - self._end < FRAME_LENGTH.size + MAX_RECEIVED_FRAME_LENGTH:
            pending = self._end - self._start
            self._view[:pending] = self._view[self._start : self._end]
            self._start, self._end = 0, pending
        return self._view[self._end :]

    def received(self, count: int) -> list[memoryview]:
        """Take ``count`` bytes written at the start of :meth:`receive_buffer`; return the frames now whole."""
        self._raise_if_broken()
        if not 0 <= count <= len(self._buffer) - self._end:
            raise ValueError(f"{count} bytes cannot have been received into {len(self._buffer) - self._end}")
        self._end += count
        frames: list[memoryview] = []
        while self._end - self._start >= FRAME_LENGTH.size:
            (length,) = FRAME_LENGTH.unpack_from(self._buffer, self._start)
            if not MIN_FRAME_LENGTH <= length <= MAX_RECEIVED_FRAME_LENGTH:
                self._error = NetBackendError(
                    f"the network backend sent a frame length of {length} bytes at stream offset "
                    f"{self._offset} (a frame is {MIN_FRAME_LENGTH} to {MAX_RECEIVED_FRAME_LENGTH} bytes): "
                    "the stream is out of step; restart the backend"
                )
                raise self._error
            frame_end = self._start + FRAME_LENGTH.size + length
            if frame_end > self._end:
                break
            frames.append(self._view[self._start + FRAME_LENGTH.size : frame_end])
            self._offset += frame_end - self._start
            self._start = frame_end
        return frames

    def feed(self, data: BytesLike) -> list[bytes]:
        """Take ``data`` (any number of bytes, from anywhere); return copies of the frames now whole."""
        source = memoryview(data).cast("B")
        frames: list[bytes] = []
        while True:
            space = self.receive_buffer()
            count = min(len(space), len(source))
            space[:count] = source[:count]
            frames.extend(bytes(frame) for frame in self.received(count))
            source = source[count:]
            if not source:
                return frames

    def _raise_if_broken(self) -> None:
        if self._error is not None:
            raise self._error


def _checked_length(frame: BytesLike) -> int:
    length = memoryview(frame).nbytes
    if not MIN_FRAME_LENGTH <= length <= MAX_SENT_FRAME_LENGTH:
        raise NetBackendError(
            f"a frame of {length} bytes cannot go to the network backend (it takes {MIN_FRAME_LENGTH} to "
            f"{MAX_SENT_FRAME_LENGTH} bytes): drop it"
        )
    return length


def frame_buffers(frames: Iterable[BytesLike]) -> list[memoryview]:
    """The buffers of ``frames`` on the stream, for ``sendmsg``: each frame after its length.

    The frames are not copied: the lengths share one small buffer and the list
    alternates length, frame (so ``buffers[2 * i : 2 * i + 2]`` is frame ``i``).
    Raises :class:`NetBackendError`, before anything is encoded, for a frame
    shorter than :data:`MIN_FRAME_LENGTH` or longer than :data:`MAX_SENT_FRAME_LENGTH`.
    """
    views = [memoryview(frame).cast("B") for frame in frames]
    lengths = bytearray(FRAME_LENGTH.size * len(views))
    for index, view in enumerate(views):
        FRAME_LENGTH.pack_into(lengths, index * FRAME_LENGTH.size, _checked_length(view))
    headers = memoryview(lengths)
    buffers: list[memoryview] = []
    for index, view in enumerate(views):
        buffers.append(headers[index * FRAME_LENGTH.size : (index + 1) * FRAME_LENGTH.size])
        buffers.append(view)
    return buffers


def encode_frames(frames: Iterable[BytesLike]) -> bytes:
    """``frames`` as one buffer of the stream, each after its length; refuses what :func:`frame_buffers` does."""
    return b"".join(frame_buffers(frames))
