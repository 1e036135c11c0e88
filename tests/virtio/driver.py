"""A test-side virtio driver: lays out a split queue in guest memory the way Linux would."""

from __future__ import annotations

from asupermachine._core.memory import GuestMemory
from asupermachine._core.virtio.queue import (
    AVAIL_ENTRY,
    DESCRIPTOR,
    RING_HEADER,
    U16,
    USED_ELEM,
    VIRTQ_DESC_F_NEXT,
    VIRTQ_DESC_F_WRITE,
    Virtqueue,
)

DESC_TABLE = 0x1000
AVAIL_RING = 0x3000
USED_RING = 0x4000
DATA = 0x10000


class Driver:
    def __init__(self, memory: GuestMemory, size: int = 16) -> None:
        self.memory = memory
        self.queue = Virtqueue(memory, size)
        self.queue.desc_table, self.queue.avail_ring, self.queue.used_ring = DESC_TABLE, AVAIL_RING, USED_RING
        self.queue.ready = True
        self.queue.validate()
        self.avail_idx = 0

    def descriptor(self, index: int, addr: int, length: int, flags: int = 0, next_index: int = 0,
                   table: int = DESC_TABLE) -> None:
        self.memory.pack(DESCRIPTOR, table + DESCRIPTOR.size * index, addr, length, flags, next_index)

    def make_available(self, head: int) -> None:
        slot = AVAIL_RING + RING_HEADER.size + AVAIL_ENTRY.size * (self.avail_idx % self.queue.size)
        self.memory.pack(AVAIL_ENTRY, slot, head)
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        self.memory.pack(U16, AVAIL_RING + 2, self.avail_idx)

    def request(self, readable: list[bytes], writable: list[int]) -> int:
        """Chain descriptors 0.. for the given buffers, make the chain available; returns its head."""
        buffers = [(data, 0) for data in readable] + [(bytes(n), VIRTQ_DESC_F_WRITE) for n in writable]
        addr = DATA
        for index, (data, flags) in enumerate(buffers):
            self.memory.write(addr, data)
            last = index == len(buffers) - 1
            self.descriptor(index, addr, len(data), flags | (0 if last else VIRTQ_DESC_F_NEXT), index + 1)
            addr += max(len(data), 1)
        self.make_available(0)
        return 0

    def used(self) -> list[tuple[int, int]]:
        _, idx = self.memory.unpack(RING_HEADER, USED_RING)
        return [self.memory.unpack(USED_ELEM, USED_RING + 4 + 8 * i) for i in range(idx)]  # type: ignore[misc]
