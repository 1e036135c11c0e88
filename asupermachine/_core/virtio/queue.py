"""Split virtqueues (virtio 1.2, section 2.7) as a sans-IO class over :class:`GuestMemory`.

The driver owns the descriptor table and available ring; the device owns the used
ring. Everything read from guest memory is guest-controlled, so every index,
address and length is checked before use and a malformed chain raises
:class:`VirtqueueError` instead of touching anything outside guest RAM.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..._errors import GuestMemoryError, VirtqueueError
from ..memory import GuestMemory

# 2.7.5 The Virtqueue Descriptor Table
VIRTQ_DESC_F_NEXT = 1
VIRTQ_DESC_F_WRITE = 2
VIRTQ_DESC_F_INDIRECT = 4
# 2.7.6: flags of the available ring
VIRTQ_AVAIL_F_NO_INTERRUPT = 1

DESCRIPTOR = struct.Struct("<QIHH")  # addr, len, flags, next
RING_HEADER = struct.Struct("<HH")  # flags, idx
AVAIL_ENTRY = struct.Struct("<H")
USED_ELEM = struct.Struct("<II")  # id, len
U16 = struct.Struct("<H")
MAX_QUEUE_SIZE = 32768  # 2.7: Queue Size is at most 32768
# An indirect table may hold more descriptors than the queue, but not unboundedly many.
MAX_INDIRECT_DESCRIPTORS = 1024
# No single request may describe more than this many bytes (a guard against overflow games).
MAX_CHAIN_BYTES = 1 << 32


@dataclass(frozen=True)
class Buffer:
    """One guest-physical range of a request: ``length`` bytes at ``addr``."""

    addr: int
    length: int


@dataclass
class DescriptorChain:
    """A request: what the device may read, then what it may write, and the head to complete."""

    head: int
    readable: list[Buffer] = field(default_factory=list)
    writable: list[Buffer] = field(default_factory=list)

    @property
    def writable_bytes(self) -> int:
        return sum(buffer.length for buffer in self.writable)


@dataclass(frozen=True)
class QueueState:
    """What a snapshot keeps of a queue: the driver's layout and the device's ring positions."""

    size: int
    ready: bool
    desc_table: int
    avail_ring: int
    used_ring: int
    next_avail: int
    next_used: int

    def encode(self) -> dict[str, Any]:
        """As plain JSON values."""
        return dataclasses.asdict(self)

    @classmethod
    def decode(cls, body: Mapping[str, Any]) -> QueueState:
        """From :meth:`encode`'s values; raises ``KeyError``, ``TypeError`` or ``ValueError`` for others."""
        return cls(
            size=int(body["size"]), ready=bool(body["ready"]), desc_table=int(body["desc_table"]),
            avail_ring=int(body["avail_ring"]), used_ring=int(body["used_ring"]), next_avail=int(body["next_avail"]),
            next_used=int(body["next_used"]),
        )


class Virtqueue:
    """One split virtqueue, configured by the transport and drained by its device."""

    def __init__(self, memory: GuestMemory, max_size: int) -> None:
        if not 1 <= max_size <= MAX_QUEUE_SIZE or max_size & (max_size - 1):
            raise ValueError(f"queue size {max_size} must be a power of two up to {MAX_QUEUE_SIZE}")
        self.memory = memory
        self.max_size = max_size
        self.reset()

    def reset(self) -> None:
        self.size = self.max_size
        self.ready = False
        self.desc_table = 0
        self.avail_ring = 0
        self.used_ring = 0
        self.next_avail = 0
        self.next_used = 0

    def save(self) -> QueueState:
        return QueueState(
            self.size, self.ready, self.desc_table, self.avail_ring, self.used_ring, self.next_avail, self.next_used
        )

    def restore(self, state: QueueState) -> None:
        """Take ``state`` back; a ready queue is validated as when the driver set it up."""
        self.size, self.ready = state.size, state.ready
        self.desc_table, self.avail_ring, self.used_ring = state.desc_table, state.avail_ring, state.used_ring
        self.next_avail, self.next_used = state.next_avail & 0xFFFF, state.next_used & 0xFFFF
        if self.ready:
            self.validate()

    def validate(self) -> None:
        """Check the driver's layout once, when it marks the queue ready (2.7, alignment and size)."""
        if not 1 <= self.size <= self.max_size or self.size & (self.size - 1):
            raise VirtqueueError(f"queue size {self.size} is not a power of two up to {self.max_size}")
        checks = (
            ("descriptor table", self.desc_table, 16, DESCRIPTOR.size * self.size),
            ("available ring", self.avail_ring, 2, RING_HEADER.size + AVAIL_ENTRY.size * self.size + 2),
            ("used ring", self.used_ring, 4, RING_HEADER.size + USED_ELEM.size * self.size + 2),
        )
        for name, addr, alignment, length in checks:
            if addr % alignment:
                raise VirtqueueError(f"{name} at {addr:#x} is not {alignment}-byte aligned")
            if not self.memory.contains(addr, length):
                raise VirtqueueError(f"{name} at {addr:#x} (+{length:#x}) is outside guest RAM")

    # -- device side ---------------------------------------------------------------

    def pop(self) -> DescriptorChain | None:
        """The next request the driver made available, or None when there is none."""
        _, avail_idx = self.memory.unpack(RING_HEADER, self.avail_ring)
        pending = (avail_idx - self.next_avail) & 0xFFFF
        if pending == 0:
            return None
        if pending > self.size:
            raise VirtqueueError(f"available index moved {pending} entries ahead of a {self.size}-entry queue")
        slot = self.avail_ring + RING_HEADER.size + AVAIL_ENTRY.size * (self.next_avail % self.size)
        (head,) = self.memory.unpack(AVAIL_ENTRY, slot)
        self.next_avail = (self.next_avail + 1) & 0xFFFF
        return self._chain(head)

    def add_used(self, head: int, written: int) -> None:
        """Complete request ``head``, reporting ``written`` bytes put in its writable buffers."""
        slot = self.used_ring + RING_HEADER.size + USED_ELEM.size * (self.next_used % self.size)
        self.memory.pack(USED_ELEM, slot, head, written)
        self.next_used = (self.next_used + 1) & 0xFFFF
        # 2.7.8: the idx update must be visible after the element; a store after a store
        # is ordered on x86.
        self.memory.pack(U16, self.used_ring + 2, self.next_used)

    def gather(self, chain: DescriptorChain, limit: int) -> bytes:
        """The chain's device-readable bytes, at most ``limit`` of them."""
        parts = []
        for buffer in chain.readable:
            take = min(buffer.length, limit)
            parts.append(self.memory.read(buffer.addr, take))
            limit -= take
            if limit == 0:
                break
        return b"".join(parts)

    def scatter(self, chain: DescriptorChain, data: bytes) -> int:
        """Copy ``data`` into the chain's device-writable buffers; returns how many bytes fit."""
        written = 0
        for buffer in chain.writable:
            piece = data[written : written + buffer.length]
            if not piece:
                break
            self.memory.write(buffer.addr, piece)
            written += len(piece)
        return written

    def interrupt_suppressed(self) -> bool:
        """Whether the driver asked for no interrupt on used buffers (VIRTQ_AVAIL_F_NO_INTERRUPT)."""
        flags, _ = self.memory.unpack(RING_HEADER, self.avail_ring)
        return bool(flags & VIRTQ_AVAIL_F_NO_INTERRUPT)

    # -- chain walking ---------------------------------------------------------------

    def _chain(self, head: int) -> DescriptorChain:
        if head >= self.size:
            raise VirtqueueError(f"descriptor head {head} is outside a {self.size}-entry table")
        chain = DescriptorChain(head)
        total = 0
        index: int | None = head
        visited = 0
        while index is not None:
            visited += 1
            if visited > self.size:
                raise VirtqueueError(f"descriptor chain from head {head} loops or exceeds the queue size")
            addr, length, flags, next_index = self._descriptor(self.desc_table, index)
            if flags & VIRTQ_DESC_F_INDIRECT:
                if flags & VIRTQ_DESC_F_NEXT:
                    raise VirtqueueError(f"descriptor {index} sets both INDIRECT and NEXT")
                total += self._indirect(chain, addr, length)
                index = None
            else:
                total += self._add(chain, addr, length, flags)
                index = next_index if flags & VIRTQ_DESC_F_NEXT else None
                if index is not None and index >= self.size:
                    raise VirtqueueError(f"descriptor next index {index} is outside a {self.size}-entry table")
            if total > MAX_CHAIN_BYTES:
                raise VirtqueueError(f"descriptor chain from head {head} describes more than 4 GiB")
        return chain

    def _indirect(self, chain: DescriptorChain, table: int, length: int) -> int:
        if length == 0 or length % DESCRIPTOR.size:
            raise VirtqueueError(f"indirect table length {length} is not a non-zero multiple of 16")
        count = length // DESCRIPTOR.size
        if count > MAX_INDIRECT_DESCRIPTORS:
            raise VirtqueueError(f"indirect table of {count} descriptors exceeds {MAX_INDIRECT_DESCRIPTORS}")
        total = 0
        index: int | None = 0
        visited = 0
        while index is not None:
            visited += 1
            if visited > count:
                raise VirtqueueError("indirect descriptor chain loops")
            addr, buffer_length, flags, next_index = self._descriptor(table, index)
            if flags & VIRTQ_DESC_F_INDIRECT:
                raise VirtqueueError("an indirect table may not point at another indirect table")
            total += self._add(chain, addr, buffer_length, flags)
            index = next_index if flags & VIRTQ_DESC_F_NEXT else None
            if index is not None and index >= count:
                raise VirtqueueError(f"indirect next index {index} is outside a {count}-entry table")
        return total

    def _descriptor(self, table: int, index: int) -> tuple[int, ...]:
        try:
            return self.memory.unpack(DESCRIPTOR, table + DESCRIPTOR.size * index)
        except GuestMemoryError as error:
            raise VirtqueueError(f"descriptor {index} of the table at {table:#x} is outside guest RAM") from error

    def _add(self, chain: DescriptorChain, addr: int, length: int, flags: int) -> int:
        if not self.memory.contains(addr, length):
            raise VirtqueueError(f"buffer [{addr:#x}, +{length:#x}) is outside guest RAM")
        if flags & VIRTQ_DESC_F_WRITE:
            chain.writable.append(Buffer(addr, length))
        elif chain.writable:
            raise VirtqueueError("a device-readable buffer follows a device-writable one")
        else:
            chain.readable.append(Buffer(addr, length))
        return length
