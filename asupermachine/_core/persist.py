"""A paused VM's state as plain values (KVM's per-vCPU and VM blobs, MSRs, devices, the UART), and its capture."""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass, field

from .arch.x86_64.msr import MSR_IA32_TSC
from .devices.uart import UartState
from .kvm import VcpuFd, VmFd
from .kvm.state import VCPU_LATE_STATE_KINDS, VCPU_STATE_KINDS, VM_STATE_KINDS, StateKind, get_state, set_state
from .virtio.mmio import TransportState

# Not every KVM offers these (no XSAVE without the CPU feature); a snapshot may lack them.
OPTIONAL_KINDS = frozenset({StateKind.XSAVE, StateKind.XCRS, StateKind.DEBUGREGS})

_CLOCK_VALUE = struct.Struct("<Q")  # kvm_clock_data.clock, in ns, at offset 0

CpuidRows = tuple[tuple[int, int, int, int, int, int, int], ...]


@dataclass(frozen=True)
class VcpuState:
    cpuid: CpuidRows
    """x86_64's; none on arm64."""
    kvm: dict[StateKind, bytes]
    msrs: dict[int, int]
    registers: dict[int, bytes] = field(default_factory=dict)
    """arm64's: every register KVM lists for the vCPU, by ONE_REG id."""


@dataclass(frozen=True)
class MachineState:
    """Everything but guest memory and disks that a restore puts back."""

    vcpus: tuple[VcpuState, ...]
    vm: dict[StateKind, bytes]
    transports: dict[str, TransportState]
    """Each virtio transport's state, by device id."""
    uart: UartState
    captured_at_ns: int
    """The host's wall clock (``time.time_ns()``) when the state was captured."""
    tsc_khz: int
    task_vector_states: dict[int, bytes]
    """Guest tasks' extended vector state kept by the VMM (see :mod:`..devices.vector_state`)."""
    vgic: tuple[bytes, ...] = ()
    """arm64's interrupt controller: its registers, in :func:`..arch.aarch64.vgic_state.vgic_registers` order."""


def advanced(state: MachineState, elapsed_ns: int) -> MachineState:
    """``state`` with the guest's clocks (TSC and kvmclock) moved on by ``elapsed_ns``.

    A restored guest then sees the time since its snapshot pass as if it had been
    paused: its monotonic clocks never go back, and its wall clock is right.
    """
    elapsed_ns = max(0, elapsed_ns)
    ticks = elapsed_ns * state.tsc_khz // 1_000_000
    vcpus = tuple(
        dataclasses.replace(vcpu, msrs={**vcpu.msrs, MSR_IA32_TSC: vcpu.msrs[MSR_IA32_TSC] + ticks})
        if MSR_IA32_TSC in vcpu.msrs
        else vcpu
        for vcpu in state.vcpus
    )
    vm = dict(state.vm)
    if StateKind.CLOCK in vm:
        clock = bytearray(vm[StateKind.CLOCK])
        (value,) = _CLOCK_VALUE.unpack_from(clock)
        _CLOCK_VALUE.pack_into(clock, 0, value + elapsed_ns)
        vm[StateKind.CLOCK] = bytes(clock)
    return dataclasses.replace(state, vcpus=vcpus, vm=vm)


def capture_vcpu(vcpu: VcpuFd, cpuid: CpuidRows, msr_indices: list[int]) -> VcpuState:
    """The state of a paused vCPU (out of ``KVM_RUN``)."""
    kvm: dict[StateKind, bytes] = {}
    for kind in (*VCPU_STATE_KINDS, *VCPU_LATE_STATE_KINDS):
        try:
            kvm[kind] = get_state(vcpu.fd, kind)
        except OSError:
            if kind not in OPTIONAL_KINDS:
                raise
    return VcpuState(cpuid, kvm, vcpu.get_msrs(msr_indices))


def restore_vcpu(vcpu: VcpuFd, state: VcpuState) -> None:
    """Load ``state`` into a fresh vCPU whose CPUID is already set, in the order KVM needs."""
    for kind in VCPU_STATE_KINDS:
        if kind in state.kvm:
            set_state(vcpu.fd, kind, state.kvm[kind])
    vcpu.set_msrs(state.msrs)
    for kind in VCPU_LATE_STATE_KINDS:
        set_state(vcpu.fd, kind, state.kvm[kind])


def capture_vm(vm_fd: VmFd) -> dict[StateKind, bytes]:
    return {kind: get_state(vm_fd.fd, kind) for kind in VM_STATE_KINDS}


def restore_vm(vm_fd: VmFd, state: dict[StateKind, bytes]) -> None:
    for kind in VM_STATE_KINDS:
        set_state(vm_fd.fd, kind, state[kind])
