"""Where the VMM puts things in guest-physical memory at boot (x86_64)."""

from __future__ import annotations

BOOT_GDT_ADDR = 0x500
BOOT_IDT_ADDR = 0x520
BOOT_STACK_POINTER = 0x8FF0
ZERO_PAGE_ADDR = 0x7000
PML4_ADDR = 0x9000
PDPT_ADDR = 0xA000
PD_ADDR = 0xB000
CMDLINE_ADDR = 0x20000
# Linux 6.1 x86 COMMAND_LINE_SIZE, including the terminating NUL.
CMDLINE_MAX_SIZE = 2048
# The MP spec lets the OS find the floating pointer in the last KiB of base memory.
EBDA_START = 0x9FC00
MPTABLE_ADDR = EBDA_START
HIGH_MEMORY_START = 0x100000
# Guest RAM stops below this; [MMIO_GAP_START, 4 GiB) holds the IOAPIC, LAPIC and device MMIO.
MMIO_GAP_START = 0xC000_0000
FOUR_GIB = 1 << 32
# KVM needs three pages for the TSS (VMX real-mode emulation) and one for the EPT identity map.
KVM_TSS_ADDR = 0xFFFB_D000
KVM_IDENTITY_MAP_ADDR = 0xFFFB_C000
IOAPIC_ADDR = 0xFEC0_0000
LAPIC_ADDR = 0xFEE0_0000
PAGE_SIZE = 0x1000


def ram_layout(memory_size: int) -> list[tuple[int, int]]:
    """Guest RAM regions ``(guest_phys_addr, size)`` for ``memory_size`` bytes, skipping the MMIO gap."""
    if memory_size <= MMIO_GAP_START:
        return [(0, memory_size)]
    return [(0, MMIO_GAP_START), (FOUR_GIB, memory_size - MMIO_GAP_START)]
