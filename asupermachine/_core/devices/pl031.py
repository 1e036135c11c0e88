"""An ARM PrimeCell PL031 real-time clock: how an arm64 guest learns the wall-clock time (sans-IO).

An x86_64 guest reads the time from kvmclock; arm64's KVM has nothing like it,
so the guest's ``rtc-pl031`` driver reads this device's seconds counter once
at boot (``RTC_HCTOSYS``) and its clocks run on the generic timer from then on
(a restore moves that timer on by the snapshot's age). The counter is the
host's clock plus whatever the guest set it to since (``hwclock --systohc``);
that setting lasts while the VM runs. Alarms are not offered: the device tree
gives the device no interrupt, so the driver registers none.

Registers as in the PL031 Technical Reference Manual (ARM DDI 0224), and the
PrimeCell identification the AMBA bus reads to match the driver.
"""

from __future__ import annotations

import time
from collections.abc import Callable

DATA, MATCH, LOAD, CONTROL, INTERRUPT_MASK, RAW_INTERRUPT, MASKED_INTERRUPT, INTERRUPT_CLEAR = range(0, 0x20, 4)
REGISTERS_SIZE = 0x1000
IDENTIFICATION = dict(zip(range(0xFE0, 0x1000, 4), (0x31, 0x10, 0x14, 0x00, 0x0D, 0xF0, 0x05, 0xB1), strict=True))
"""Peripheral id 0x00141031 (a PL031 by ARM, revision 1, as QEMU's) and the PrimeCell id 0xB105F00D, a byte
per register."""
COUNTER_MASK = 0xFFFF_FFFF


class Pl031:
    """The RTC's registers; ``now`` is the host's wall clock in seconds."""

    def __init__(self, now: Callable[[], float] = time.time) -> None:
        self._now = now
        self._offset = 0
        """Seconds the guest's loads moved the counter from the host's clock."""
        self._loaded = 0
        self._match = 0
        self._interrupt_mask = 0

    def read(self, offset: int, size: int) -> int:
        if offset == DATA:
            return (int(self._now()) + self._offset) & COUNTER_MASK
        if offset == LOAD:
            return self._loaded
        if offset == MATCH:
            return self._match
        if offset == CONTROL:
            return 1  # counting, always
        if offset == INTERRUPT_MASK:
            return self._interrupt_mask
        return IDENTIFICATION.get(offset, 0)  # the interrupt status: never raised

    def write(self, offset: int, size: int, value: int) -> None:
        value &= COUNTER_MASK
        if offset == LOAD:
            self._loaded = value
            self._offset = value - int(self._now())
        elif offset == MATCH:
            self._match = value
        elif offset == INTERRUPT_MASK:
            self._interrupt_mask = value & 1
