"""Guest RAM: anonymous host memory addressed by guest-physical address, bounds-checked."""

from __future__ import annotations

import ctypes
import mmap
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .._errors import GuestMemoryError

# <sys/mman.h>: Python's mmap module does not export it.
MAP_NORESERVE = 0x4000


@dataclass(frozen=True)
class MemoryRegion:
    """A run of guest RAM: ``size`` bytes at guest-physical ``guest_phys_addr``, ``offset`` into the mapping."""

    guest_phys_addr: int
    size: int
    offset: int

    @property
    def end(self) -> int:
        return self.guest_phys_addr + self.size


class GuestMemory:
    """Guest RAM over one ``MAP_NORESERVE`` mapping, split into guest-physical regions.

    The mapping is anonymous (zeroed), or a private copy-on-write mapping of a
    ``backing`` file holding a snapshot's memory: pages are read from it lazily
    and shared through the page cache by every VM mapping the same file.

    Every access is checked to lie wholly inside one region; anything else raises
    :class:`GuestMemoryError`, so a guest-supplied address can never reach host memory
    outside the mapping.
    """

    def __init__(self, layout: Sequence[tuple[int, int]], backing: Path | None = None) -> None:
        """``layout`` is ``(guest_phys_addr, size)`` pairs, page-aligned and non-overlapping.

        ``backing`` must be at least as large as the regions together.
        """
        regions: list[MemoryRegion] = []
        offset = 0
        for gpa, size in sorted(layout):
            if gpa % mmap.PAGESIZE or size % mmap.PAGESIZE or size <= 0:
                raise ValueError(f"region ({gpa:#x}, {size:#x}) is not page-aligned and non-empty")
            if regions and gpa < regions[-1].end:
                raise ValueError(f"region at {gpa:#x} overlaps the one before it")
            regions.append(MemoryRegion(gpa, size, offset))
            offset += size
        if not regions:
            raise ValueError("guest memory needs at least one region")
        self.regions: tuple[MemoryRegion, ...] = tuple(regions)
        # (first gpa, end gpa, mapping offset - gpa) per region, as plain ints: _locate runs for every
        # descriptor, header and buffer a device touches.
        self._spans = tuple(
            (region.guest_phys_addr, region.end, region.offset - region.guest_phys_addr) for region in regions
        )
        self.size = offset
        if backing is None:
            self._mapping = mmap.mmap(-1, offset, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_NORESERVE)
        else:
            fd = os.open(backing, os.O_RDONLY | os.O_CLOEXEC)
            try:
                self._mapping = mmap.mmap(
                    fd, offset, flags=mmap.MAP_PRIVATE | MAP_NORESERVE, prot=mmap.PROT_READ | mmap.PROT_WRITE
                )
            finally:
                os.close(fd)
        self._view = memoryview(self._mapping)
        anchor = ctypes.c_char.from_buffer(self._mapping)
        self._host_base = ctypes.addressof(anchor)
        del anchor  # drops the buffer export so close() can unmap

    def _locate(self, gpa: int, length: int) -> int:
        """The mapping offset of ``[gpa, gpa+length)``, which must lie inside one region."""
        if length >= 0 and gpa >= 0:
            end = gpa + length
            for first, last, shift in self._spans:
                if first <= gpa and end <= last:
                    return gpa + shift
        raise GuestMemoryError(gpa, length)

    def view(self, gpa: int, length: int) -> memoryview:
        """A zero-copy, writable view of ``length`` bytes at ``gpa``. Release it before ``close()``."""
        start = self._locate(gpa, length)
        return self._view[start : start + length]

    def read(self, gpa: int, length: int) -> bytes:
        start = self._locate(gpa, length)
        return self._view[start : start + length].tobytes()

    def write(self, gpa: int, data: bytes | bytearray | memoryview) -> None:
        start = self._locate(gpa, len(data))
        self._view[start : start + len(data)] = data

    def unpack(self, layout: struct.Struct, gpa: int) -> tuple[int, ...]:
        """``layout.unpack`` of the bytes at ``gpa``, without copying them out first."""
        values: tuple[int, ...] = layout.unpack_from(self._view, self._locate(gpa, layout.size))
        return values

    def pack(self, layout: struct.Struct, gpa: int, *values: int) -> None:
        layout.pack_into(self._view, self._locate(gpa, layout.size), *values)

    def contains(self, gpa: int, length: int = 1) -> bool:
        try:
            self._locate(gpa, length)
        except GuestMemoryError:
            return False
        return True

    @property
    def whole(self) -> memoryview:
        """All of guest RAM as one view, in mapping order (regions back to back). Release it before ``close()``."""
        return self._view[:]

    def host_address(self, region: MemoryRegion) -> int:
        """The host virtual address backing ``region`` (for ``KVM_SET_USER_MEMORY_REGION``)."""
        return self._host_base + region.offset

    def close(self) -> None:
        """Unmap guest RAM. Views handed out must have been released."""
        if self._mapping.closed:
            return
        self._view.release()
        self._mapping.close()

    def __enter__(self) -> GuestMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
