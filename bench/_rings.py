"""A guest's side of several in-flight virtqueue requests, laid out as Linux lays them out, for bench/devices.py.

:class:`asupermachine.testing.VirtqueueDriver` serves one request at a time; a
benchmark needs a batch in flight (a queue depth, a burst of frames). :class:`Ring`
keeps its descriptor table, rings and per-slot indirect tables at its own
guest-physical base, and puts every chain of more than one buffer behind an
indirect descriptor, as Linux's ``virtqueue_add_split`` does once
VIRTIO_RING_F_INDIRECT_DESC is negotiated (the transport always offers it).
"""

from __future__ import annotations

from asupermachine._core.memory import GuestMemory
from asupermachine._core.virtio.queue import (
    DESCRIPTOR,
    RING_HEADER,
    USED_ELEM,
    VIRTQ_DESC_F_INDIRECT,
    VIRTQ_DESC_F_NEXT,
    VIRTQ_DESC_F_WRITE,
)
from asupermachine.testing import VirtqueueDriver

MAX_INDIRECT = 64
"""Descriptors per slot's indirect table (Linux: one kmalloc'd table per request)."""

BufferSpec = tuple[int, int, bool]
"""``(guest-physical address, length in bytes, device-writable)`` of one buffer of a request."""


class Ring(VirtqueueDriver):
    """A ``size``-entry split queue at guest-physical ``base`` (it takes ``Ring.span(size)`` bytes from there)."""

    @staticmethod
    def span(size: int) -> int:
        return 0x4000 + size * (DESCRIPTOR.size * MAX_INDIRECT) + 0x4000

    def __init__(self, memory: GuestMemory, base: int, size: int) -> None:
        self.DESC_TABLE = base
        self.AVAIL_RING = base + DESCRIPTOR.size * size
        self.USED_RING = (self.AVAIL_RING + RING_HEADER.size + 2 * size + 2 + 0xFFF) & ~0xFFF
        self._indirect = (self.USED_RING + RING_HEADER.size + USED_ELEM.size * size + 2 + 0xFFF) & ~0xFFF
        super().__init__(memory, size)
        self._free = list(range(size))
        self._last_used = 0

    @property
    def free(self) -> int:
        """Slots (ring descriptors) the driver may still fill."""
        return len(self._free)

    def post(self, buffers: list[BufferSpec]) -> int:
        """Make one request available and publish it; returns its head descriptor."""
        head = self._free.pop()
        if len(buffers) == 1:
            addr, length, writable = buffers[0]
            self.descriptor(head, addr, length, VIRTQ_DESC_F_WRITE if writable else 0)
        else:
            table = self._indirect + head * DESCRIPTOR.size * MAX_INDIRECT
            for index, (addr, length, writable) in enumerate(buffers):
                flags = (VIRTQ_DESC_F_WRITE if writable else 0) | (VIRTQ_DESC_F_NEXT if index + 1 < len(buffers) else 0)
                self.descriptor(index, addr, length, flags, index + 1, table=table)
            self.descriptor(head, table, DESCRIPTOR.size * len(buffers), VIRTQ_DESC_F_INDIRECT)
        self.make_available(head)
        return head

    def reap(self) -> list[tuple[int, int]]:
        """Completions since the last call, ``(head, bytes written)``, their slots freed for new requests."""
        _, idx = self.memory.unpack(RING_HEADER, self.USED_RING)
        done = []
        while self._last_used != idx:
            slot = self.USED_RING + RING_HEADER.size + USED_ELEM.size * (self._last_used % self.queue.size)
            head, written = self.memory.unpack(USED_ELEM, slot)
            done.append((head, written))
            self._free.append(head)
            self._last_used = (self._last_used + 1) & 0xFFFF
        return done
