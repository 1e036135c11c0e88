"""The VM's virtio-mmio devices, registered once and found by id (as Firecracker's ``device_manager/mmio.rs``).

Registering a device does everything it needs: its register window and IRQ,
its irqfd and an ioeventfd per queue, its range on the MMIO bus, and the
command-line word that declares it to the guest. A device is looked up by its
id, never by position; a snapshot keeps each transport's state under that id.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from .devices.bus import Bus
from .kvm import VmFd
from .memory import GuestMemory
from .virtio.mmio import VIRTIO_MMIO_SIZE, TransportState, VirtioDevice
from .virtio.service import MmioSlot, VirtioService


@dataclass(frozen=True)
class SlotPlan:
    """Where an architecture puts virtio-mmio windows (one after another from ``base``) and their interrupts."""

    base: int
    first_irq: int
    last_irq: int

    @property
    def capacity(self) -> int:
        return self.last_irq - self.first_irq + 1


X86_64_SLOTS = SlotPlan(0xD000_0000, 5, 23)
"""In the MMIO gap below 4 GiB; IOAPIC pins from 5 (above COM1's 4) to its last, 23."""


class MmioDeviceManager:
    """The VM's virtio devices by id, in registration order (the guest's probe order: vda before vdb)."""

    def __init__(self, vm_fd: VmFd, bus: Bus, memory: GuestMemory, plan: SlotPlan) -> None:
        self._vm_fd, self._bus, self._memory, self._plan = vm_fd, bus, memory, plan
        self._services: dict[str, VirtioService] = {}

    def register(self, device_id: str, device: VirtioDevice) -> VirtioService:
        """Give ``device`` the next free slot and serve it there; the manager owns it from now on.

        Raises ``ValueError`` for a taken id or when the IRQs run out (``device`` is then closed).
        """
        try:
            if device_id in self._services:
                raise ValueError(f"a device with id {device_id!r} is already registered")
            index, plan = len(self._services), self._plan
            irq = plan.first_irq + index
            if irq > plan.last_irq:
                raise ValueError(f"at most {plan.capacity} virtio devices fit")
            slot = MmioSlot(plan.base + index * VIRTIO_MMIO_SIZE, irq)
            service = VirtioService(self._vm_fd, self._bus, self._memory, device, slot)
        except BaseException:
            device.close()
            raise
        self._services[device_id] = service
        return service

    def __getitem__(self, device_id: str) -> VirtioService:
        """The device registered as ``device_id``; raises ``KeyError`` if there is none."""
        return self._services[device_id]

    def __iter__(self) -> Iterator[tuple[str, VirtioService]]:
        return iter(self._services.items())

    @property
    def kernel_arguments(self) -> list[str]:
        return [service.slot.kernel_argument for service in self._services.values()]

    def save(self) -> dict[str, TransportState]:
        """Every transport's state by device id (the VM quiesced)."""
        return {device_id: service.transport.save() for device_id, service in self._services.items()}

    def restore(self, states: Mapping[str, TransportState]) -> None:
        """Put each device's saved transport state back, matched by id.

        Raises ``ValueError`` if the saved devices are not these, :class:`VirtqueueError` if a state does not fit.
        """
        if set(states) != set(self._services):
            raise ValueError(f"the saved devices are {sorted(states)}, this VM's {sorted(self._services)}")
        for device_id, service in self._services.items():
            service.transport.restore(states[device_id])

    def close(self) -> None:
        """Release every device's eventfds and backend; after the VM fd is closed (KVM drops its references then)."""
        for service in self._services.values():
            service.close()
            service.transport.device.close()
        self._services.clear()
