"""The CPU model the guest sees (``KVM_SET_CPUID2`` plus, under software KVM, the command line).

On hardware KVM the guest gets what the host supports. Under software KVM
(``kvm_pvm``) the guest kernel runs in KVM's instruction emulator, which refuses
instructions that some feature flags make the kernel use (xsave/xrstor, popcnt,
clac, rdpid, wrfsbase, ...). There the guest's own ``cpuid`` returns the host's
values whatever KVM's table says (observed: a masked table still got ``popcnt``
patched in), so the features are hidden twice: masked in KVM's table, so KVM's
checks agree with the guest, and cleared in the guest with ``clearcpuid=``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ...kvm.host import this_host

CpuidEntry = tuple[int, int, int, int, int, int, int]
"""``(function, index, flags, eax, ebx, ecx, edx)`` as in ``struct kvm_cpuid_entry2``."""

_REGISTERS = ("eax", "ebx", "ecx", "edx")


class CpuModel(enum.Enum):
    HOST = "host"
    """Everything the host's KVM supports."""
    CONSERVATIVE = "conservative"
    """The host's features minus those software KVM's emulator refuses."""


def detect_cpu_model() -> CpuModel:
    """Conservative where software KVM (``kvm_pvm``) is loaded, else the host's features."""
    return CpuModel.CONSERVATIVE if this_host().software else CpuModel.HOST


@dataclass(frozen=True)
class CpuFeature:
    """One CPUID feature bit, named as Linux's ``clearcpuid=`` and QEMU's ``-cpu`` know it."""

    name: str
    leaf: int
    register: str
    bit: int


# Features whose instructions kvm_pvm's emulator refuses at CPL0 (see shared/KVM-HERE.md),
# or that select such instructions (erms/fsrm: rep movsb string copies; pcid/invpcid: TLB ops).
EMULATOR_REFUSED_FEATURES = (
    CpuFeature("xsave", 0x1, "ecx", 26),
    CpuFeature("pcid", 0x1, "ecx", 17),
    CpuFeature("popcnt", 0x1, "ecx", 23),
    CpuFeature("rdrand", 0x1, "ecx", 30),
    CpuFeature("fsgsbase", 0x7, "ebx", 0),
    CpuFeature("smep", 0x7, "ebx", 7),
    CpuFeature("erms", 0x7, "ebx", 9),
    CpuFeature("invpcid", 0x7, "ebx", 10),
    CpuFeature("rdseed", 0x7, "ebx", 18),
    CpuFeature("smap", 0x7, "ebx", 20),
    CpuFeature("umip", 0x7, "ecx", 2),
    CpuFeature("rdpid", 0x7, "ecx", 22),
    CpuFeature("fsrm", 0x7, "edx", 4),
)
# KVM paravirtual features that work through hypercalls (Documentation/virt/kvm/x86/cpuid.rst):
# PV_UNHALT (kick CPU), PV_SEND_IPI, PV_SCHED_YIELD. A vCPU making one under kvm_pvm
# never gets past it (seen: the first AP spins on KVM_HC_SEND_IPI at SMP bring-up).
KVM_CPUID_FEATURES = 0x4000_0001
KVM_HYPERCALL_FEATURES = (1 << 7) | (1 << 11) | (1 << 13)
CPUID_1_ECX_OSXSAVE = 1 << 27
CPUID_1_ECX_HYPERVISOR = 1 << 31
CPUID_1_EDX_HTT = 1 << 28
XSAVE_LEAF = 0xD


# Making kernel text and rodata read-only rewrites page tables and flushes TLBs:
# milliseconds on hardware, seconds of emulated guest-kernel time under kvm_pvm.
# (no-kvmclock looked faster by the guest's uptime, but only because the guest's
# TSC clock runs wrong without kvm-clock here: by the host's clock it was not.)
SOFTWARE_KVM_BOOT_TRIMS = ("rodata=off",)
# Without xsave the kernel keeps x87/SSE state alone, while user code there uses
# the host's AVX registers: the VMM switches the rest (devices/vector_state.py).
VMM_SWITCHED_VECTOR_STATE = "asupermachine_xstate_ports"


def kernel_arguments(model: CpuModel) -> list[str]:
    """Command-line words for the model: hide what it lacks, skip what it makes too slow."""
    if model is CpuModel.HOST:
        return []
    return [
        "clearcpuid=" + ",".join(feature.name for feature in EMULATOR_REFUSED_FEATURES),
        VMM_SWITCHED_VECTOR_STATE,
        *SOFTWARE_KVM_BOOT_TRIMS,
    ]


def guest_cpuid(supported: list[CpuidEntry], model: CpuModel, vcpu: int, vcpus: int) -> list[CpuidEntry]:
    """The CPUID table for vCPU ``vcpu`` of ``vcpus``, derived from KVM's supported CPUID."""
    table = supported if model is CpuModel.HOST else _without_refused(supported)
    return [_per_vcpu(entry, vcpu, vcpus) for entry in table]


def _per_vcpu(entry: CpuidEntry, vcpu: int, vcpus: int) -> CpuidEntry:
    function, index, flags, eax, ebx, ecx, edx = entry
    if function == 1:
        # EBX: initial APIC ID (31..24), logical processor count (23..16), CLFLUSH size in qwords (15..8).
        ebx = (vcpu << 24) | (max(vcpus, 1) << 16) | (8 << 8) | (ebx & 0xFF)
        edx = edx | CPUID_1_EDX_HTT if vcpus > 1 else edx & ~CPUID_1_EDX_HTT
        ecx |= CPUID_1_ECX_HYPERVISOR
    elif function in (0xB, 0x1F):
        edx = vcpu  # x2APIC ID (KVM reports the host CPU's that answered the ioctl)
    return (function, index, flags, eax, ebx, ecx, edx)


def _without_refused(supported: list[CpuidEntry]) -> list[CpuidEntry]:
    table: list[CpuidEntry] = []
    for function, index, flags, *registers in supported:
        if function == XSAVE_LEAF:
            continue  # no xsave, no xsave state components
        for feature in EMULATOR_REFUSED_FEATURES:
            if feature.leaf == function and index == 0:
                registers[_REGISTERS.index(feature.register)] &= ~(1 << feature.bit)
        if function == 1:
            registers[2] &= ~CPUID_1_ECX_OSXSAVE
        elif function == KVM_CPUID_FEATURES:
            registers[0] &= ~KVM_HYPERCALL_FEATURES
        eax, ebx, ecx, edx = registers
        table.append((function, index, flags, eax, ebx, ecx, edx))
    return table
