"""Address-space buses: route a vCPU's port I/O or MMIO access to the device that owns it."""

from __future__ import annotations

import bisect
import threading
from typing import Protocol


class BusDevice(Protocol):
    """A device on a bus, addressed by byte offset from its base."""

    def read(self, offset: int, size: int) -> int: ...

    def write(self, offset: int, size: int, value: int) -> None: ...


class Bus:
    """Non-overlapping ranges of an address space (ports or guest-physical addresses).

    Each device is called under its own lock, since vCPUs run in parallel threads.
    An access no device claims reads as all ones (a floating ISA bus) and is
    otherwise ignored: the guest may probe anything.
    """

    def __init__(self) -> None:
        self._bases: list[int] = []
        self._ranges: list[tuple[int, int, BusDevice, threading.Lock]] = []

    def register(self, base: int, length: int, device: BusDevice) -> threading.Lock:
        """Claim ``[base, base+length)`` for ``device``; returns the lock its accesses run under."""
        if length <= 0:
            raise ValueError("a bus range needs a positive length")
        index = bisect.bisect_left(self._bases, base)
        if index > 0 and self._ranges[index - 1][1] > base:
            raise ValueError(f"range at {base:#x} overlaps one already registered")
        if index < len(self._ranges) and self._ranges[index][0] < base + length:
            raise ValueError(f"range at {base:#x} overlaps one already registered")
        lock = threading.Lock()
        self._bases.insert(index, base)
        self._ranges.insert(index, (base, base + length, device, lock))
        return lock

    def _route(self, address: int, size: int) -> tuple[int, BusDevice, threading.Lock] | None:
        index = bisect.bisect_right(self._bases, address) - 1
        if index < 0:
            return None
        base, end, device, lock = self._ranges[index]
        if address + size > end:
            return None
        return address - base, device, lock

    def read(self, address: int, size: int) -> int:
        """A ``size``-byte read (1, 2, 4 or 8) at ``address``."""
        route = self._route(address, size)
        if route is None:
            return (1 << (8 * size)) - 1
        offset, device, lock = route
        with lock:
            return device.read(offset, size)

    def write(self, address: int, size: int, value: int) -> None:
        route = self._route(address, size)
        if route is None:
            return
        offset, device, lock = route
        with lock:
            device.write(offset, size, value)
