"""The guest kernel command line: only what the kernel reads (init's configuration is a file: see init_config)."""

from __future__ import annotations

from collections.abc import Sequence

from ..kernel_words import QUIET_ARGUMENTS
from .cpuid import CpuModel, kernel_arguments

# console on COM1; reboot through the i8042 (which we emulate); reboot at once on panic;
# skip the timer-IRQ and TSC checks, crypto self-tests and mitigations: each costs
# guest-kernel time, which software KVM emulates instruction by instruction.
BASE_ARGUMENTS = (
    "console=ttyS0",
    "8250.nr_uarts=1",
    "reboot=k",
    "panic=-1",
    "no_timer_check",
    "tsc=reliable",
    "cryptomgr.notests",
    "mitigations=off",
)


def kernel_cmdline(*, cpu_model: CpuModel, kernel_log: bool, extra: str = "", devices: Sequence[str] = ()) -> str:
    """Our defaults, ``devices`` (the words that declare virtio-mmio slots), and the caller's ``extra``."""
    words = [*BASE_ARGUMENTS, *devices]
    if not kernel_log:
        words += QUIET_ARGUMENTS
    words += kernel_arguments(cpu_model)
    if extra:
        words.append(extra)
    return " ".join(words)
