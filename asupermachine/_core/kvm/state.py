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
    name: str
    """The ioctls' common suffix: ``KVM_GET_{name}``, ``KVM_SET_{name}``."""
    struct: str
    chip: str | None = None
    """For ``kvm_irqchip``: which chip (``KVM_IRQCHIP_{chip}``), written into the struct before the get."""


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

    def _request(self, verb: str) -> int:
        """``KVM_{verb}_{name}``: looked up when used, as most kinds are x86_64's only."""
        return int(getattr(lib, f"KVM_{verb}_{self._ioctls.name}"))


_IOCTLS = {
    StateKind.REGS: _Ioctls("REGS", "kvm_regs"),
    StateKind.SREGS: _Ioctls("SREGS", "kvm_sregs"),
    StateKind.FPU: _Ioctls("FPU", "kvm_fpu"),
    StateKind.XSAVE: _Ioctls("XSAVE", "kvm_xsave"),
    StateKind.XCRS: _Ioctls("XCRS", "kvm_xcrs"),
    StateKind.LAPIC: _Ioctls("LAPIC", "kvm_lapic_state"),
    StateKind.VCPU_EVENTS: _Ioctls("VCPU_EVENTS", "kvm_vcpu_events"),
    StateKind.MP_STATE: _Ioctls("MP_STATE", "kvm_mp_state"),
    StateKind.DEBUGREGS: _Ioctls("DEBUGREGS", "kvm_debugregs"),
    StateKind.PIC_MASTER: _Ioctls("IRQCHIP", "kvm_irqchip", "PIC_MASTER"),
    StateKind.PIC_SLAVE: _Ioctls("IRQCHIP", "kvm_irqchip", "PIC_SLAVE"),
    StateKind.IOAPIC: _Ioctls("IRQCHIP", "kvm_irqchip", "IOAPIC"),
    StateKind.PIT2: _Ioctls("PIT2", "kvm_pit_state2"),
    StateKind.CLOCK: _Ioctls("CLOCK", "kvm_clock_data"),
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
    buffer = ffi.new("char[]", kind.size)
    if (chip := kind._ioctls.chip) is not None:
        ffi.cast("struct kvm_irqchip *", buffer).chip_id = getattr(lib, f"KVM_IRQCHIP_{chip}")
    check(lib.amv_ioctl_struct(fd, kind._request("GET"), buffer), f"KVM_GET_{kind.name}")
    return bytes(ffi.buffer(buffer))


def set_state(fd: int, kind: StateKind, data: bytes) -> None:
    """Load ``data`` (from :func:`get_state` of the same kind) into the VM or vCPU ``fd``."""
    if len(data) != kind.size:
        raise ValueError(f"{kind.value} state is {len(data)} bytes, KVM's is {kind.size}")
    buffer = ffi.new("char[]", len(data))
    ffi.memmove(buffer, data, len(data))
    if kind is StateKind.CLOCK:
        ffi.cast("struct kvm_clock_data *", buffer).flags = 0  # only the clock value is settable
    check(lib.amv_ioctl_struct(fd, kind._request("SET"), buffer), f"KVM_SET_{kind.name}")
