"""Tell an L1 that QEMU's TCG has frozen from one that is only busy, from its vCPUs' registers over time.

The freeze (docs/kvm.md, "When the L1 itself stops"): a vCPU re-enters the L1
kernel's breakpoint handler from a stale translation of a patched instruction,
with interrupts off, forever. A healthy L1 is seldom caught with interrupts off,
and never at the same one or two addresses for a minute.
"""

from __future__ import annotations

import re
from collections import deque

READINGS = 4
"""Consecutive readings a vCPU must be caught in the same spot to be called frozen."""
MAX_ADDRESSES = 2
"""The spot: the patched instruction and the breakpoint handler it re-enters."""
INTERRUPT_FLAG = 0x200
STATE_LINE = re.compile(r"^(CPU#\d+) RIP=([0-9a-f]+) RFL=([0-9a-f]+)")


class FreezeWatch:
    """Feed it :func:`.monitor.vcpu_states` readings taken some seconds apart; it names a frozen vCPU."""

    def __init__(self, readings: int = READINGS) -> None:
        self._readings: deque[dict[str, tuple[str, bool]]] = deque(maxlen=readings)

    def observe(self, states: list[str]) -> str | None:
        """Take one reading; the line of a vCPU caught with interrupts off at the same spot in each of
        the last readings, or None. A mute monitor (no lines) starts the count again."""
        reading = {}
        for line in states:
            if (match := STATE_LINE.match(line)) is not None:
                cpu, rip, flags = match.groups()
                reading[cpu] = (rip, not int(flags, 16) & INTERRUPT_FLAG)
        if not reading:
            self._readings.clear()
            return None
        self._readings.append(reading)
        if len(self._readings) < (self._readings.maxlen or 0):
            return None
        for cpu in reading:
            spots = [taken.get(cpu) for taken in self._readings]
            if all(spot is not None and spot[1] for spot in spots):
                if len({spot[0] for spot in spots if spot is not None}) <= MAX_ADDRESSES:
                    return next(line for line in states if line.startswith(f"{cpu} "))
        return None
