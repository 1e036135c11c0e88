"""A paused VM's state as plain values: KVM's per-vCPU and VM blobs, MSRs, devices, the UART."""

from __future__ import annotations

from dataclasses import dataclass

from ..devices.uart import UartState
from ..kvm import VcpuFd, VmFd
from ..kvm.state import VCPU_LATE_STATE_KINDS, VCPU_STATE_KINDS, VM_STATE_KINDS, StateKind, get_state, set_state
from ..virtio.mmio import TransportState

# Not every KVM offers these (no XSAVE without the CPU feature); a snapshot may lack them.
OPTIONAL_KINDS = frozenset({StateKind.XSAVE, StateKind.XCRS, StateKind.DEBUGREGS})

CpuidRows = tuple[tuple[int, int, int, int, int, int, int], ...]


@dataclass(frozen=True)
class VcpuState:
    cpuid: CpuidRows
    kvm: dict[StateKind, bytes]
    msrs: dict[int, int]


@dataclass(frozen=True)
class MachineState:
    """Everything but guest memory and disks that a restore puts back."""

    vcpus: tuple[VcpuState, ...]
    vm: dict[StateKind, bytes]
    transports: tuple[TransportState, ...]
    uart: UartState


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


def capture_vm(vm: VmFd) -> dict[StateKind, bytes]:
    return {kind: get_state(vm.fd, kind) for kind in VM_STATE_KINDS}


def restore_vm(vm: VmFd, state: dict[StateKind, bytes]) -> None:
    for kind in VM_STATE_KINDS:
        set_state(vm.fd, kind, state[kind])
