"""Where virtio-mmio devices live: registering one allocates its window and IRQ, and the word that declares it.

As Firecracker's ``device_manager/mmio.rs``: nothing else counts slots.
"""

from __future__ import annotations

from dataclasses import dataclass

from .virtio.mmio import VIRTIO_MMIO_SIZE, VirtioDevice

# Device slots sit in the MMIO gap below 4 GiB; their IRQs start above COM1's 4.
VIRTIO_MMIO_BASE = 0xD000_0000
FIRST_VIRTIO_IRQ = 5
LAST_VIRTIO_IRQ = 23


@dataclass(frozen=True)
class MmioSlot:
    """Where a virtio-mmio device lives: its register window (guest-physical) and its interrupt line."""

    base: int
    irq: int

    @property
    def kernel_argument(self) -> str:
        """How the guest learns of the device (CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES)."""
        return f"virtio_mmio.device=4K@{self.base:#x}:{self.irq}"


class MmioDeviceManager:
    """The VM's virtio devices in registration order, each with its slot."""

    def __init__(self) -> None:
        self.devices: list[tuple[VirtioDevice, MmioSlot]] = []

    def register(self, device: VirtioDevice) -> MmioSlot:
        """Give ``device`` the next free slot; raises ``ValueError`` when the IRQs run out."""
        index = len(self.devices)
        irq = FIRST_VIRTIO_IRQ + index
        if irq > LAST_VIRTIO_IRQ:
            raise ValueError(f"at most {LAST_VIRTIO_IRQ - FIRST_VIRTIO_IRQ + 1} virtio devices fit")
        slot = MmioSlot(VIRTIO_MMIO_BASE + index * VIRTIO_MMIO_SIZE, irq)
        self.devices.append((device, slot))
        return slot

    @property
    def kernel_arguments(self) -> list[str]:
        return [slot.kernel_argument for _, slot in self.devices]
