"""The VM's virtio-mmio devices, registered once and found by id (as Firecracker's ``device_manager/mmio.rs``).

Registering a device does everything it needs: its register window and IRQ,
its irqfd and an ioeventfd per queue, its range on the MMIO bus, and the
command-line word that declares it to the guest. A device is looked up by its
id, never by position; a snapshot keeps each transport's state under that id.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from .devices.bus import Bus
from .kvm import VmFd
from .memory import GuestMemory
from .virtio.mmio import VIRTIO_MMIO_SIZE, TransportState, VirtioDevice
from .virtio.service import MmioSlot, VirtioService

# Device slots sit in the MMIO gap below 4 GiB; their IRQs start above COM1's 4.
VIRTIO_MMIO_BASE = 0xD000_0000
FIRST_VIRTIO_IRQ = 5
LAST_VIRTIO_IRQ = 23
MAX_VIRTIO_DEVICES = LAST_VIRTIO_IRQ - FIRST_VIRTIO_IRQ + 1


class MmioDeviceManager:
    """The VM's virtio devices by id, in registration order (the guest's probe order: vda before vdb)."""

    def __init__(self, vm_fd: VmFd, bus: Bus, memory: GuestMemory) -> None:
        self._vm_fd, self._bus, self._memory = vm_fd, bus, memory
        self._services: dict[str, VirtioService] = {}

    def register(self, device_id: str, device: VirtioDevice) -> VirtioService:
        """Give ``device`` the next free slot and serve it there; the manager owns it from now on.

        Raises ``ValueError`` for a taken id or when the IRQs run out (``device`` is then closed).
        """
        try:
            if device_id in self._services:
                raise ValueError(f"a device with id {device_id!r} is already registered")
            index = len(self._services)
            irq = FIRST_VIRTIO_IRQ + index
            if irq > LAST_VIRTIO_IRQ:
                raise ValueError(f"at most {MAX_VIRTIO_DEVICES} virtio devices fit")
            slot = MmioSlot(VIRTIO_MMIO_BASE + index * VIRTIO_MMIO_SIZE, irq)
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
