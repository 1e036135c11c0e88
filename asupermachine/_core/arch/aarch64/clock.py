"""An arm64 guest's time across a snapshot, and whether its vCPUs are idle: pure arithmetic on KVM's numbers.

The guest's clocks run on the generic timer's virtual counter, which KVM saves
and restores as the ONE_REG ``KVM_REG_ARM_TIMER_CNT``; writing it moves the
VM's counter offset. A restore moves the counter on by the snapshot's age, so
the guest sees the time between as if it had been paused: its monotonic clocks
never go back, and its wall clock is right. A timer due in between fires at once.
"""

from __future__ import annotations

from collections.abc import Mapping


def _sysreg(op0: int, op1: int, crn: int, crm: int, op2: int) -> int:
    """``ARM64_SYS_REG`` of the KVM headers: a 64-bit system register's ONE_REG id."""
    return 0x6030_0000_0013_0000 | op0 << 14 | op1 << 11 | crn << 7 | crm << 3 | op2


TIMER_COUNT = _sysreg(3, 3, 14, 3, 2)
"""``KVM_REG_ARM_TIMER_CNT``: the guest's virtual counter (its encoding is CNTVCT_EL0's, as the uapi has it)."""
IDLE_SHARE = 0.8
"""The share of a moment its vCPUs must have spent waiting for an interrupt for a guest to count as idle."""


def counter_advanced(registers: Mapping[int, bytes], elapsed_ns: int, frequency_hz: int) -> dict[int, bytes]:
    """A vCPU's saved ``registers`` with its virtual counter moved on by ``elapsed_ns`` at ``frequency_hz``."""
    moved = dict(registers)
    if TIMER_COUNT in moved:
        ticks = max(0, elapsed_ns) * frequency_hz // 1_000_000_000
        count = (int.from_bytes(moved[TIMER_COUNT], "little") + ticks) % (1 << 64)
        moved[TIMER_COUNT] = count.to_bytes(8, "little")
    return moved


def waited_through(waited_ns: int, ran_ns: int, vcpus: int) -> bool:
    """Whether ``vcpus`` that between them waited ``waited_ns`` for an interrupt (KVM's ``halt_wait_ns``)
    while they ran for ``ran_ns`` were idle all along.

    arm64's KVM keeps no halted state once a vCPU is out of ``KVM_RUN``, so
    idleness is told by the time the vCPUs spent in WFI.
    """
    return ran_ns > 0 and waited_ns >= IDLE_SHARE * ran_ns * vcpus
