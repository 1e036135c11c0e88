"""Registers, segments, FPU, MSRs and LAPIC of a vCPU about to enter ``startup_64``."""

from __future__ import annotations

import struct
from typing import Any

from ...kvm import VcpuFd
from .gdt import Segment, boot_segments, gdt_bytes
from .layout import BOOT_GDT_ADDR, BOOT_IDT_ADDR, BOOT_STACK_POINTER, PML4_ADDR, ZERO_PAGE_ADDR
from .msr import (
    MISC_ENABLE_FAST_STRING,
    MSR_CSTAR,
    MSR_IA32_MISC_ENABLE,
    MSR_IA32_SYSENTER_CS,
    MSR_IA32_SYSENTER_EIP,
    MSR_IA32_SYSENTER_ESP,
    MSR_IA32_TSC,
    MSR_KERNEL_GS_BASE,
    MSR_LSTAR,
    MSR_MTRR_DEF_TYPE,
    MSR_STAR,
    MSR_SYSCALL_MASK,
    MTRR_ENABLE,
    MTRR_TYPE_WRBACK,
)

X86_CR0_PE = 1 << 0
X86_CR0_ET = 1 << 4
X86_CR0_PG = 1 << 31
X86_CR4_PAE = 1 << 5
EFER_LME = 1 << 8
EFER_LMA = 1 << 10
RFLAGS_RESERVED_BIT1 = 0x2
FPU_CONTROL_WORD_DEFAULT = 0x37F
MXCSR_DEFAULT = 0x1F80

BOOT_MSRS = {
    MSR_IA32_SYSENTER_CS: 0,
    MSR_IA32_SYSENTER_ESP: 0,
    MSR_IA32_SYSENTER_EIP: 0,
    MSR_STAR: 0,
    MSR_CSTAR: 0,
    MSR_KERNEL_GS_BASE: 0,
    MSR_SYSCALL_MASK: 0,
    MSR_LSTAR: 0,
    MSR_IA32_TSC: 0,
    MSR_IA32_MISC_ENABLE: MISC_ENABLE_FAST_STRING,
    MSR_MTRR_DEF_TYPE: MTRR_ENABLE | MTRR_TYPE_WRBACK,
}

# LAPIC register offsets and LVT delivery modes (Intel SDM vol. 3, 10.5.1)
APIC_LVT0 = 0x350
APIC_LVT1 = 0x360
APIC_MODE_NMI = 0x4
APIC_MODE_EXTINT = 0x7


def boot_memory_contents() -> dict[int, bytes]:
    """GDT and (empty) IDT the boot vCPU's descriptor-table registers point at."""
    return {BOOT_GDT_ADDR: gdt_bytes(), BOOT_IDT_ADDR: bytes(8)}


def _load_segment(target: Any, segment: Segment) -> None:
    target.base = segment.base
    target.limit = segment.limit
    target.selector = segment.selector
    target.type = segment.type
    target.present = segment.present
    target.dpl = segment.dpl
    target.db = segment.db
    target.s = segment.s
    target.l = segment.l
    target.g = segment.g
    target.avl = segment.avl
    target.unusable = 0


def set_lint_delivery(lapic: bytearray) -> bytearray:
    """LINT0 as ExtINT and LINT1 as NMI: virtual-wire mode, as firmware leaves it."""
    for offset, mode in ((APIC_LVT0, APIC_MODE_EXTINT), (APIC_LVT1, APIC_MODE_NMI)):
        (value,) = struct.unpack_from("<I", lapic, offset)
        struct.pack_into("<I", lapic, offset, (value & ~0x700) | (mode << 8))
    return lapic


def setup_boot_vcpu(vcpu: VcpuFd, entry: int) -> None:
    """Put the boot vCPU in 64-bit mode at ``entry`` with ``%rsi`` at the zero page."""
    sregs = vcpu.get_sregs()
    code, data, tss = boot_segments()
    _load_segment(sregs.cs, code)
    for target in (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss):
        _load_segment(target, data)
    _load_segment(sregs.tr, tss)
    sregs.gdt.base, sregs.gdt.limit = BOOT_GDT_ADDR, len(gdt_bytes()) - 1
    sregs.idt.base, sregs.idt.limit = BOOT_IDT_ADDR, 7
    sregs.cr0 = X86_CR0_PE | X86_CR0_ET | X86_CR0_PG
    sregs.cr3 = PML4_ADDR
    sregs.cr4 = X86_CR4_PAE
    sregs.efer = EFER_LME | EFER_LMA
    vcpu.set_sregs(sregs)

    regs = vcpu.get_regs()
    regs.rflags = RFLAGS_RESERVED_BIT1
    regs.rip = entry
    regs.rsp = regs.rbp = BOOT_STACK_POINTER
    regs.rsi = ZERO_PAGE_ADDR
    vcpu.set_regs(regs)


def setup_common_vcpu_state(vcpu: VcpuFd) -> None:
    """State every vCPU needs, boot or application processor: FPU, MSRs, LAPIC LINT pins."""
    vcpu.set_fpu(FPU_CONTROL_WORD_DEFAULT, MXCSR_DEFAULT)
    vcpu.set_msrs(BOOT_MSRS)
    vcpu.set_lapic(bytes(set_lint_delivery(vcpu.get_lapic())))
