"""arm64's own KVM calls: vCPU init with PSCI, registers by ONE_REG id, the register list, the in-kernel vGIC.

Documentation/virt/kvm/api.rst (``KVM_ARM_VCPU_INIT``, ``KVM_SET_ONE_REG``,
``KVM_GET_REG_LIST``) and devices/arm-vgic-v3.rst, arm-vgic.rst. Only built on
an arm64 host, where the bindings have these calls.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ..arch.aarch64.vgic_state import VgicRegister
from ._check import check
from ._kvm_cffi import ffi, lib
from .vcpu import VcpuFd
from .vm import VmFd

CORE_X0, CORE_SP, CORE_PC, CORE_PSTATE = 0, 31, 32, 33
"""Core registers by :func:`core_register`'s index: x0-x30 are 0-30."""
REG_SIZE_MASK, REG_SIZE_SHIFT = 0x00F0_0000_0000_0000, 52
MAX_REGISTERS = 1024
"""Ample for KVM_GET_REG_LIST (a vCPU without SVE has ~300; the call says if more are needed)."""
VGIC_NR_IRQS = 128
"""Interrupt ids the vGIC serves: the 32 private ones and 96 SPIs, a multiple of 32 as KVM wants."""


def core_register(index: int) -> int:
    """The ONE_REG id of core register ``index`` (:data:`CORE_PC`, :data:`CORE_PSTATE`, x0 = 0...)."""
    return int(lib.amv_arm64_core_reg(index))


def counter_frequency() -> int:
    """The host's generic timer frequency in Hz, at which a guest's virtual counter ticks too."""
    return int(lib.amv_arm64_counter_frequency())


def register_size(register: int) -> int:
    """How many bytes register id ``register`` holds (its ``KVM_REG_SIZE`` field)."""
    return 1 << ((register & REG_SIZE_MASK) >> REG_SIZE_SHIFT)


def init_vcpu(vm: VmFd, vcpu: VcpuFd, *, powered_off: bool) -> None:
    """``KVM_ARM_VCPU_INIT`` with the host's preferred CPU type and PSCI 0.2+.

    A secondary vCPU starts ``powered_off``: the guest brings it up with PSCI ``CPU_ON``.
    """
    init: Any = ffi.new("struct kvm_vcpu_init *")
    check(lib.amv_arm_preferred_target(vm.fd, init), "KVM_ARM_PREFERRED_TARGET")
    features = 1 << lib.KVM_ARM_VCPU_PSCI_0_2
    if powered_off:
        features |= 1 << lib.KVM_ARM_VCPU_POWER_OFF
    init.features[0] = features
    check(lib.amv_arm_vcpu_init(vcpu.fd, init), "KVM_ARM_VCPU_INIT")


def get_register(vcpu: VcpuFd, register: int) -> bytes:
    value = ffi.new("uint8_t[]", register_size(register))
    check(lib.amv_get_one_reg(vcpu.fd, register, value), f"KVM_GET_ONE_REG {register:#x}")
    return bytes(ffi.buffer(value))


def set_register(vcpu: VcpuFd, register: int, value: bytes) -> None:
    if len(value) != register_size(register):
        raise ValueError(f"register {register:#x} holds {register_size(register)} bytes, not {len(value)}")
    check(lib.amv_set_one_reg(vcpu.fd, register, ffi.from_buffer(value)), f"KVM_SET_ONE_REG {register:#x}")


def set_core_register(vcpu: VcpuFd, index: int, value: int) -> None:
    set_register(vcpu, core_register(index), value.to_bytes(8, "little"))


def register_list(vcpu: VcpuFd) -> list[int]:
    """Every register KVM saves and restores for ``vcpu`` (after its init), by ONE_REG id."""
    count = ffi.new("uint64_t *", MAX_REGISTERS)
    ids = ffi.new("uint64_t[]", MAX_REGISTERS)
    check(lib.amv_get_reg_list(vcpu.fd, ids, count), "KVM_GET_REG_LIST")
    return [int(ids[index]) for index in range(count[0])]


def registers(vcpu: VcpuFd) -> dict[int, bytes]:
    """The value of every register in :func:`register_list`, the vCPU out of ``KVM_RUN``."""
    return {register: get_register(vcpu, register) for register in register_list(vcpu)}


class Vgic:
    """The in-kernel GIC (``KVM_CREATE_DEVICE``): placed before the vCPUs exist, initialized once they all do."""

    def __init__(self, vm: VmFd, *, version: int, distributor: int, second: int) -> None:
        """A GICv3 (``version`` 3: ``second`` is the redistributors' base) or GICv2 (``second``: the CPU
        interface's). Raises ``OSError`` if KVM cannot make that version here."""
        kind = lib.KVM_DEV_TYPE_ARM_VGIC_V3 if version == 3 else lib.KVM_DEV_TYPE_ARM_VGIC_V2
        self.version = version
        self.fd = check(lib.amv_create_device(vm.fd, kind), f"KVM_CREATE_DEVICE (vGICv{version})")
        try:
            if version == 3:
                addresses = ((lib.KVM_VGIC_V3_ADDR_TYPE_DIST, distributor), (lib.KVM_VGIC_V3_ADDR_TYPE_REDIST, second))
            else:
                addresses = ((lib.KVM_VGIC_V2_ADDR_TYPE_DIST, distributor), (lib.KVM_VGIC_V2_ADDR_TYPE_CPU, second))
            for attribute, address in addresses:
                self._set(lib.KVM_DEV_ARM_VGIC_GRP_ADDR, attribute, ffi.new("uint64_t *", address))
            self._set(lib.KVM_DEV_ARM_VGIC_GRP_NR_IRQS, 0, ffi.new("uint32_t *", VGIC_NR_IRQS))
        except BaseException:
            self.close()
            raise

    def initialize(self) -> None:
        """Finish the vGIC once every vCPU is created (``KVM_DEV_ARM_VGIC_CTRL_INIT``)."""
        self._set(lib.KVM_DEV_ARM_VGIC_GRP_CTRL, lib.KVM_DEV_ARM_VGIC_CTRL_INIT, ffi.NULL)

    def save(self, registers: Sequence[VgicRegister]) -> list[bytes]:
        """The values of ``registers`` (see :mod:`..arch.aarch64.vgic_state`), the VM paused."""
        values = []
        for register in registers:
            value = ffi.new("uint8_t[]", register.size)
            check(lib.amv_device_attr(self.fd, 0, register.group, register.attribute, value),
                  f"KVM_GET_DEVICE_ATTR {register.group}/{register.attribute:#x}")
            values.append(bytes(ffi.buffer(value)))
        return values

    def restore(self, registers: Sequence[VgicRegister], values: Sequence[bytes]) -> None:
        """Write back what :meth:`save` read, in order (after :meth:`initialize`)."""
        for register, value in zip(registers, values, strict=True):
            if len(value) != register.size:
                raise ValueError(f"vGIC register {register.attribute:#x} holds {register.size} bytes, not {len(value)}")
            self._set(register.group, register.attribute, ffi.from_buffer(value))

    def _set(self, group: int, attribute: int, value: Any) -> None:
        check(lib.amv_device_attr(self.fd, 1, group, attribute, value), f"KVM_SET_DEVICE_ATTR {group}/{attribute:#x}")

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def spi_line(spi: int) -> int:
    """``KVM_IRQ_LINE``'s ``irq`` for shared peripheral interrupt ``spi`` (counted from 0, id 32 + ``spi``)."""
    return int(lib.KVM_ARM_IRQ_TYPE_SPI << lib.KVM_ARM_IRQ_TYPE_SHIFT | (32 + spi))
