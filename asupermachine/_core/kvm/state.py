"""KVM state as opaque bytes: each kind is one ``KVM_GET_*``/``KVM_SET_*`` pair over a whole struct.

A snapshot moves these blobs between a VM and a file without interpreting them;
only KVM (of the same ABI) reads them back.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ._check import check
from ._kvm_cffi import ffi, lib


@dataclass(frozen=True)
class _Ioctls:
    get: int
    set: int
    struct: str
    chip_id: int | None = None
    """For ``kvm_irqchip``: which chip, written into the struct before the get."""


class StateKind(enum.Enum):
    """One piece of vCPU or VM state. Values name the piece in snapshot files."""

    REGS = "regs"
    SREGS = "sregs"
    FPU = "fpu"
    XSAVE = "xsave"
    XCRS = "xcrs"
    LAPIC = "lapic"
    VCPU_EVENTS = "vcpu_events"
    MP_STATE = "mp_state"
    DEBUGREGS = "debugregs"
    PIC_MASTER = "pic_master"
    PIC_SLAVE = "pic_slave"
    IOAPIC = "ioapic"
    PIT2 = "pit2"
    CLOCK = "clock"

    @property
    def _ioctls(self) -> _Ioctls:
        return _IOCTLS[self]

    @property
    def size(self) -> int:
        return int(ffi.sizeof(f"struct {self._ioctls.struct}"))


_IOCTLS = {
    StateKind.REGS: _Ioctls(lib.KVM_GET_REGS, lib.KVM_SET_REGS, "kvm_regs"),
    StateKind.SREGS: _Ioctls(lib.KVM_GET_SREGS, lib.KVM_SET_SREGS, "kvm_sregs"),
    StateKind.FPU: _Ioctls(lib.KVM_GET_FPU, lib.KVM_SET_FPU, "kvm_fpu"),
    StateKind.XSAVE: _Ioctls(lib.KVM_GET_XSAVE, lib.KVM_SET_XSAVE, "kvm_xsave"),
    StateKind.XCRS: _Ioctls(lib.KVM_GET_XCRS, lib.KVM_SET_XCRS, "kvm_xcrs"),
    StateKind.LAPIC: _Ioctls(lib.KVM_GET_LAPIC, lib.KVM_SET_LAPIC, "kvm_lapic_state"),
    StateKind.VCPU_EVENTS: _Ioctls(lib.KVM_GET_VCPU_EVENTS, lib.KVM_SET_VCPU_EVENTS, "kvm_vcpu_events"),
    StateKind.MP_STATE: _Ioctls(lib.KVM_GET_MP_STATE, lib.KVM_SET_MP_STATE, "kvm_mp_state"),
    StateKind.DEBUGREGS: _Ioctls(lib.KVM_GET_DEBUGREGS, lib.KVM_SET_DEBUGREGS, "kvm_debugregs"),
    StateKind.PIC_MASTER: _Ioctls(
        lib.KVM_GET_IRQCHIP, lib.KVM_SET_IRQCHIP, "kvm_irqchip", lib.KVM_IRQCHIP_PIC_MASTER
    ),
    StateKind.PIC_SLAVE: _Ioctls(lib.KVM_GET_IRQCHIP, lib.KVM_SET_IRQCHIP, "kvm_irqchip", lib.KVM_IRQCHIP_PIC_SLAVE),
    StateKind.IOAPIC: _Ioctls(lib.KVM_GET_IRQCHIP, lib.KVM_SET_IRQCHIP, "kvm_irqchip", lib.KVM_IRQCHIP_IOAPIC),
    StateKind.PIT2: _Ioctls(lib.KVM_GET_PIT2, lib.KVM_SET_PIT2, "kvm_pit_state2"),
    StateKind.CLOCK: _Ioctls(lib.KVM_GET_CLOCK, lib.KVM_SET_CLOCK, "kvm_clock_data"),
}

VCPU_STATE_KINDS = (
    # The order KVM needs on restore: mode and registers first, the LAPIC before the
    # MSRs (TSC deadline), pending events last (after the MSRs are set separately).
    StateKind.MP_STATE,
    StateKind.REGS,
    StateKind.SREGS,
    StateKind.FPU,
    StateKind.XSAVE,
    StateKind.XCRS,
    StateKind.DEBUGREGS,
    StateKind.LAPIC,
)
VCPU_LATE_STATE_KINDS = (StateKind.VCPU_EVENTS,)
VM_STATE_KINDS = (StateKind.PIC_MASTER, StateKind.PIC_SLAVE, StateKind.IOAPIC, StateKind.PIT2, StateKind.CLOCK)


def get_state(fd: int, kind: StateKind) -> bytes:
    """The ``kind`` state of the VM or vCPU ``fd``."""
    ioctls = kind._ioctls
    buffer = ffi.new("char[]", kind.size)
    if ioctls.chip_id is not None:
        ffi.cast("struct kvm_irqchip *", buffer).chip_id = ioctls.chip_id
    check(lib.amv_ioctl_struct(fd, ioctls.get, buffer), f"KVM_GET_{kind.name}")
    return bytes(ffi.buffer(buffer))


def set_state(fd: int, kind: StateKind, data: bytes) -> None:
    """Load ``data`` (from :func:`get_state` of the same kind) into the VM or vCPU ``fd``."""
    if len(data) != kind.size:
        raise ValueError(f"{kind.value} state is {len(data)} bytes, KVM's is {kind.size}")
    buffer = ffi.new("char[]", len(data))
    ffi.memmove(buffer, data, len(data))
    if kind is StateKind.CLOCK:
        ffi.cast("struct kvm_clock_data *", buffer).flags = 0  # only the clock value is settable
    check(lib.amv_ioctl_struct(fd, kind._ioctls.set, buffer), f"KVM_SET_{kind.name}")
