"""KVM's own statistics of a VM or vCPU (``KVM_GET_STATS_FD``): exits by kind, injections, halts.

The binary format (Documentation/virt/kvm/api.rst, "KVM_GET_STATS_FD") is a
header, a table of descriptors (flags, exponent, size, offset, bucket size, a
fixed-width name) and a data block of 64-bit values. :class:`StatsLayout` is its
sans-IO reader; :class:`KvmStats` reads a VM's or vCPU's. QEMU's ``query-stats`` reports
the same counters, so two VMMs on the same guest compare exit for exit.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ._check import check
from ._kvm_cffi import lib

HEADER = struct.Struct("<6I")  # flags, name_size, num_desc, id_offset, desc_offset, data_offset
DESCRIPTOR = struct.Struct("<IhHII")  # flags, exponent, size, offset, bucket_size; then the name
VALUE = struct.Struct("<Q")
STATS_TYPE_MASK = 0xF  # KVM_STATS_TYPE_*: 0 cumulative, 1 instant, 2 peak, 3-4 histograms
STATS_TYPE_CUMULATIVE = 0
# A sane upper bound on what a kernel describes (6.x has about 60 per vCPU).
MAX_DESCRIPTORS = 4096
MAX_NAME_SIZE = 256


class StatsFormatError(ValueError):
    """The kernel's statistics block is not in the documented format."""


@dataclass(frozen=True)
class Counter:
    name: str
    offset: int
    """Byte offset of its value from the data block's start."""


@dataclass(frozen=True)
class StatsLayout:
    """Where each cumulative single-value counter (``exits``, ``io_exits``, ...) sits in the data block."""

    counters: tuple[Counter, ...]
    data_offset: int
    data_size: int

    @classmethod
    def parse(cls, head: bytes, descriptors: bytes) -> StatsLayout:
        """From the header and the descriptor table (``descriptor_table_span(head)`` bytes from its offset)."""
        _, name_size, count, _, _, data_offset = _header(head)
        stride = DESCRIPTOR.size + name_size
        if len(descriptors) < count * stride:
            raise StatsFormatError(f"{count} descriptors need {count * stride} bytes, have {len(descriptors)}")
        counters, data_size = [], 0
        for index in range(count):
            start = index * stride
            flags, _, size, offset, _ = DESCRIPTOR.unpack_from(descriptors, start)
            data_size = max(data_size, offset + size * VALUE.size)
            if flags & STATS_TYPE_MASK != STATS_TYPE_CUMULATIVE or size != 1:
                continue
            raw = descriptors[start + DESCRIPTOR.size : start + stride]
            counters.append(Counter(raw.split(b"\0", 1)[0].decode("ascii", "replace"), offset))
        return cls(tuple(counters), data_offset, data_size)

    def values(self, data: bytes) -> dict[str, int]:
        """The counters' values in ``data``, the data block."""
        if len(data) < self.data_size:
            raise StatsFormatError(f"a data block of {len(data)} bytes, the descriptors need {self.data_size}")
        return {counter.name: VALUE.unpack_from(data, counter.offset)[0] for counter in self.counters}


def descriptor_table_span(head: bytes) -> tuple[int, int]:
    """``(offset, length)`` of the descriptor table the header announces."""
    _, name_size, count, _, desc_offset, _ = _header(head)
    return desc_offset, count * (DESCRIPTOR.size + name_size)


def _header(head: bytes) -> tuple[int, ...]:
    if len(head) < HEADER.size:
        raise StatsFormatError(f"a header of {len(head)} bytes, not {HEADER.size}")
    fields = HEADER.unpack_from(head)
    name_size, count = fields[1], fields[2]
    if not 0 < name_size <= MAX_NAME_SIZE or count > MAX_DESCRIPTORS:
        raise StatsFormatError(f"{count} descriptors with names of {name_size} bytes")
    return fields


class KvmStats:
    """The statistics fd of a VM or vCPU, open until :meth:`close`, read at any time.

    Open a vCPU's before it first runs: ``KVM_GET_STATS_FD``, as every vCPU ioctl,
    waits for the vCPU's ``KVM_RUN`` to return, which for a halted guest may be never.
    Reading the fd waits for nothing.
    """

    def __init__(self, owner_fd: int) -> None:
        self.fd = check(lib.amv_get_stats_fd(owner_fd), "KVM_GET_STATS_FD")
        try:
            head = os.pread(self.fd, HEADER.size, 0)
            offset, length = descriptor_table_span(head)
            self._layout = StatsLayout.parse(head, os.pread(self.fd, length, offset))
        except BaseException:
            self.close()
            raise

    def read(self) -> dict[str, int]:
        """The counters now."""
        layout = self._layout
        return layout.values(os.pread(self.fd, layout.data_size, layout.data_offset))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def summed(readings: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """Counters added up across readings (a VM's and each of its vCPUs')."""
    total: dict[str, int] = {}
    for reading in readings:
        for name, value in reading.items():
            total[name] = total.get(name, 0) + value
    return total
