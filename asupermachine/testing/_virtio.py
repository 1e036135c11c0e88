"""The driver's half of a split virtqueue, for testing a device without a guest (virtio 1.2, 2.7)."""

from __future__ import annotations

from .._core.memory import GuestMemory
from .._core.virtio.queue import (
    AVAIL_ENTRY,
    DESCRIPTOR,
    RING_HEADER,
    U16,
    USED_ELEM,
    VIRTQ_DESC_F_NEXT,
    VIRTQ_DESC_F_WRITE,
    Virtqueue,
)


class VirtqueueDriver:
    """Lays out requests in guest memory the way Linux's virtio driver does, for a device to serve.

    It writes the descriptor table and the available ring, and reads back the used
    ring; :attr:`queue` is the device-side :class:`Virtqueue` over the same memory,
    already set up and ready as after the driver's ``DRIVER_OK``. Hand that queue to
    the device under test (``device.activate([driver.queue], ...)``), make requests
    with :meth:`request`, let the device serve them, then check :meth:`used`::

        with GuestMemory([(0, 1 << 20)]) as memory:
            driver = VirtqueueDriver(memory)
            device = Block(Disk(path))
            device.activate([driver.queue], 0)
            head = driver.request([header], [512, 1])  # a readable header; data and status to write
            device.process_queue(0)
            assert driver.used() == [(head, 513)]

    The ring addresses are the class attributes below (guest-physical); subclass to
    move them. ``memory`` must cover them and whatever data the requests carry.
    """

    DESC_TABLE = 0x1000
    """Guest-physical address of the descriptor table (16 bytes per entry)."""
    AVAIL_RING = 0x3000
    """Guest-physical address of the available ring (the driver's)."""
    USED_RING = 0x4000
    """Guest-physical address of the used ring (the device's)."""
    DATA = 0x10000
    """Where :meth:`request` puts its buffers, back to back."""

    def __init__(self, memory: GuestMemory, size: int = 16) -> None:
        """Set up a ``size``-entry queue (a power of two) over ``memory`` and mark it ready.

        Raises :class:`VirtqueueError` if the rings do not fit in ``memory``.
        """
        self.memory = memory
        self.queue = Virtqueue(memory, size)
        self.queue.desc_table, self.queue.avail_ring, self.queue.used_ring = (
            self.DESC_TABLE,
            self.AVAIL_RING,
            self.USED_RING,
        )
        self.queue.ready = True
        self.queue.validate()
        self.avail_idx = 0
        """The available ring's next index (wraps at 16 bits), as the driver keeps it."""

    def descriptor(
        self, index: int, addr: int, length: int, flags: int = 0, next_index: int = 0, table: int | None = None
    ) -> None:
        """Write descriptor ``index``: ``length`` bytes at guest-physical ``addr``.

        ``flags`` are ``VIRTQ_DESC_F_*``; ``next_index`` matters with ``VIRTQ_DESC_F_NEXT``.
        ``table`` is the table's guest-physical address: the queue's own unless given
        (an indirect table).
        """
        base = self.DESC_TABLE if table is None else table
        self.memory.pack(DESCRIPTOR, base + DESCRIPTOR.size * index, addr, length, flags, next_index)

    def make_available(self, head: int) -> None:
        """Put the chain starting at descriptor ``head`` on the available ring and publish it."""
        slot = self.AVAIL_RING + RING_HEADER.size + AVAIL_ENTRY.size * (self.avail_idx % self.queue.size)
        self.memory.pack(AVAIL_ENTRY, slot, head)
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        self.memory.pack(U16, self.AVAIL_RING + 2, self.avail_idx)

    def request(self, readable: list[bytes], writable: list[int]) -> int:
        """Make one request available and return its head descriptor (always 0).

        ``readable`` buffers (their bytes, for the device to read) come first, then
        ``writable`` ones (their lengths in bytes, zero-filled, for the device to
        write), as one chain in descriptors 0, 1, ... with the data at :attr:`DATA`.
        It overwrites the previous request's descriptors and data: have the device
        serve a request before making the next.
        """
        buffers = [(data, 0) for data in readable] + [(bytes(n), VIRTQ_DESC_F_WRITE) for n in writable]
        addr = self.DATA
        for index, (data, flags) in enumerate(buffers):
            self.memory.write(addr, data)
            last = index == len(buffers) - 1
            self.descriptor(index, addr, len(data), flags | (0 if last else VIRTQ_DESC_F_NEXT), index + 1)
            addr += max(len(data), 1)
        self.make_available(0)
        return 0

    def used(self) -> list[tuple[int, int]]:
        """Every completion the device published so far: ``(head, bytes written)``, oldest first.

        Reads the used ring from its start up to its index, so it is meant for fewer
        completions than the queue has entries.
        """
        _, idx = self.memory.unpack(RING_HEADER, self.USED_RING)
        completions = []
        for i in range(idx):
            head, written = self.memory.unpack(USED_ELEM, self.USED_RING + RING_HEADER.size + USED_ELEM.size * i)
            completions.append((head, written))
        return completions
