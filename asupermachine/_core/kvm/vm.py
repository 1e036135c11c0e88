"""A KVM VM fd: memory slots, in-kernel irqchip and PIT, IRQ lines, vCPU creation."""

from __future__ import annotations

import os

from ._check import check
from ._kvm_cffi import lib
from .vcpu import VcpuFd


class VmFd:
    """One KVM virtual machine (``KVM_CREATE_VM``)."""

    def __init__(self, fd: int, vcpu_mmap_size: int) -> None:
        self.fd = fd
        self._vcpu_mmap_size = vcpu_mmap_size

    def set_user_memory_region(self, slot: int, guest_phys_addr: int, size: int, host_addr: int) -> None:
        check(
            lib.amv_set_user_memory_region(self.fd, slot, 0, guest_phys_addr, size, host_addr),
            "KVM_SET_USER_MEMORY_REGION",
        )

    def set_tss_addr(self, addr: int) -> None:
        check(lib.amv_set_tss_addr(self.fd, addr), "KVM_SET_TSS_ADDR")

    def set_identity_map_addr(self, addr: int) -> None:
        check(lib.amv_set_identity_map_addr(self.fd, addr), "KVM_SET_IDENTITY_MAP_ADDR")

    def create_irqchip(self) -> None:
        check(lib.amv_create_irqchip(self.fd), "KVM_CREATE_IRQCHIP")

    def create_pit2(self) -> None:
        check(lib.amv_create_pit2(self.fd, lib.KVM_PIT_SPEAKER_DUMMY), "KVM_CREATE_PIT2")

    def set_irq_line(self, irq: int, level: bool) -> None:
        check(lib.amv_irq_line(self.fd, irq, int(level)), "KVM_IRQ_LINE")

    def register_ioeventfd(self, addr: int, length: int, fd: int, datamatch: int) -> None:
        """Have KVM signal eventfd ``fd`` on a guest write of ``datamatch`` to ``addr``, without a vCPU exit."""
        check(lib.amv_ioeventfd(self.fd, addr, length, fd, datamatch, 0), "KVM_IOEVENTFD")

    def register_irqfd(self, fd: int, gsi: int) -> None:
        """Have KVM raise interrupt ``gsi`` whenever eventfd ``fd`` is written."""
        check(lib.amv_irqfd(self.fd, fd, gsi, 0), "KVM_IRQFD")

    def create_vcpu(self, index: int) -> VcpuFd:
        fd = check(lib.amv_create_vcpu(self.fd, index), "KVM_CREATE_VCPU")
        try:
            return VcpuFd(fd, index, self._vcpu_mmap_size)
        except BaseException:
            os.close(fd)
            raise

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
