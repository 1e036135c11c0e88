"""What differs between the architectures a VM can be, behind one seam, and the one this host's KVM runs."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Protocol

from .._errors import KVMUnavailable
from .._outcome import GuestExit
from .device_manager import MmioDeviceManager, SlotPlan
from .init_config import InitConfig
from .kvm import VcpuFd
from .memory import GuestMemory
from .persist import MachineState
from .recipe import VmRecipe

if TYPE_CHECKING:
    from .microvm import MicroVm


class Platform(Protocol):
    """An architecture's VM besides its virtio devices: the builder calls :meth:`create` and
    :meth:`create_vcpus`, registers the devices, then calls :meth:`boot` for a boot (not a restore)."""

    virtio_slots: SlotPlan

    def ram_layout(self, memory_size: int) -> list[tuple[int, int]]:
        """Guest RAM as ``(guest_phys_addr, size)`` regions."""
        ...

    def create(self, microvm: MicroVm) -> None:
        """The interrupt controller, RAM's slots and the platform's own devices (the UART...)."""
        ...

    def cmdline(self, recipe: VmRecipe, devices: MmioDeviceManager) -> str:
        """The kernel's words for a boot of ``recipe`` with ``devices`` registered."""
        ...

    def create_vcpus(self, microvm: MicroVm) -> None:
        """The vCPUs (and what needs them to exist, as arm64's vGIC)."""
        ...

    def boot(self, microvm: MicroVm, cmdline: str, config: InitConfig) -> None:
        """Put the kernel, the initramfs with init's ``config`` and the boot tables in guest RAM, and the
        vCPUs in their boot state."""
        ...

    def system_exit(self, vcpu: VcpuFd, event: int, flags: int) -> GuestExit:
        """How the guest ended, from a ``KVM_EXIT_SYSTEM_EVENT`` of ``vcpu`` (out of ``KVM_RUN``)."""
        ...

    def where(self, vcpu: VcpuFd, memory: GuestMemory) -> tuple[int | None, bytes]:
        """Where ``vcpu`` is and the instruction there, for a diagnosis."""
        ...

    def idle(self, microvm: MicroVm, ran_ns: int) -> bool:
        """Whether the paused VM's guest has nothing to run: every vCPU was waiting for an interrupt.

        ``ran_ns``: how long the vCPUs ran since the last look (0 at a first look).
        """
        ...

    def capture(self, microvm: MicroVm) -> MachineState:
        """The quiesced VM's state, memory aside."""
        ...

    def restore(self, microvm: MicroVm, state: MachineState) -> None:
        """Put back :meth:`capture`'s KVM state into a VM built from the same recipe (devices aside)."""
        ...

    def close(self) -> None: ...


def host_platform() -> Platform:
    """A new platform of this host's architecture (its KVM runs only guests of its own)."""
    machine = os.uname().machine
    if machine == "x86_64":
        from .arch.x86_64.platform import X86Platform

        return X86Platform()
    if machine == "aarch64":
        from .arch.aarch64.platform import Arm64Platform

        return Arm64Platform()
    raise KVMUnavailable(f"asupermachine runs guests on x86_64 and arm64 hosts, not {machine}")
