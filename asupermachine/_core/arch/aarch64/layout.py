"""Where an arm64 VM's devices and RAM are in guest-physical memory, and their interrupts (sans-IO).

Below RAM, as on QEMU's ``virt`` board: the GIC's distributor (and a GICv2's CPU
interface), the UART, the RTC, then the virtio-mmio windows; the redistributors (one
128 KiB frame pair per vCPU) get a 512 MiB range of their own. RAM starts at
1 GiB and runs on, one region.
"""

from __future__ import annotations

from .device_tree import GicV2, GicV3, MmioDevice, Region

GIC_DISTRIBUTOR = Region(0x0800_0000, 0x1_0000)
GICV2_CPU_INTERFACE = Region(0x0801_0000, 0x1_0000)
GICV3_REDISTRIBUTORS_BASE = 0x1000_0000
GICV3_REDISTRIBUTOR_SIZE = 0x2_0000
UART = MmioDevice(Region(0x0900_0000, 0x1000), spi=1)
RTC = Region(0x0901_0000, 0x1000)
VIRTIO_MMIO_BASE = 0x0A00_0000
FIRST_VIRTIO_SPI = 16
LAST_VIRTIO_SPI = 95
"""The vGIC serves 96 SPIs (kvm.aarch64.VGIC_NR_IRQS)."""
RAM_BASE = 0x4000_0000
MAX_VCPUS = 0x2000_0000 // GICV3_REDISTRIBUTOR_SIZE


def ram_layout(memory_size: int) -> list[tuple[int, int]]:
    """Guest RAM as ``(guest_phys_addr, size)`` regions: one, from :data:`RAM_BASE`."""
    return [(RAM_BASE, memory_size)]


def gic(version: int, vcpus: int) -> GicV3 | GicV2:
    """The GIC of ``version`` (3 or 2) for ``vcpus`` vCPUs, as the device tree describes it."""
    if version == 3:
        return GicV3(GIC_DISTRIBUTOR, Region(GICV3_REDISTRIBUTORS_BASE, vcpus * GICV3_REDISTRIBUTOR_SIZE))
    return GicV2(GIC_DISTRIBUTOR, GICV2_CPU_INTERFACE)
