"""The device tree an arm64 guest boots with: its memory, vCPUs (PSCI), GIC, timer, UART, RTC and virtio devices.

The bindings are Linux's (Documentation/devicetree/bindings): ``arm,gic-v3`` or
``arm,cortex-a15-gic``, ``arm,armv8-timer``, ``arm,psci-1.0`` over ``hvc``,
``ns16550a``, ``virtio,mmio``, and ``/chosen`` for the command line and initrd.
Root and devices use two address and size cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .fdt import EMPTY, Node, blob, cells, pairs, string, strings

GIC_PHANDLE = 1
SPI, PPI = 0, 1
"""Interrupt specifier types of the GIC bindings: <type number flags>."""
IRQ_TYPE_EDGE_RISING, IRQ_TYPE_LEVEL_LOW = 1, 8
TIMER_PPIS = (13, 14, 11, 10)
"""The architected timer's interrupts: secure physical, non-secure physical, virtual, hypervisor."""
UART_CLOCK_HZ = 1_843_200
CLOCK_PHANDLE = 2
PERIPHERAL_CLOCK_HZ = 24_000_000
"""The AMBA peripherals' bus clock (``apb_pclk``), which the bus needs described to probe the RTC."""
GICV2_MAX_CPUS = 8


@dataclass(frozen=True)
class Region:
    base: int
    size: int


@dataclass(frozen=True)
class GicV3:
    distributor: Region
    redistributors: Region
    """One 128 KiB frame pair per vCPU."""


@dataclass(frozen=True)
class GicV2:
    distributor: Region
    cpu_interface: Region


@dataclass(frozen=True)
class MmioDevice:
    registers: Region
    spi: int
    """Its shared peripheral interrupt, counted from 0 (GIC interrupt id 32 + ``spi``)."""


@dataclass(frozen=True)
class Board:
    """What the guest is told it runs on."""

    memory: Region
    vcpus: int
    gic: GicV3 | GicV2
    uart: MmioDevice
    rtc: Region
    """A PL031, without an interrupt (:mod:`...devices.pl031`)."""
    virtio: Sequence[MmioDevice]
    """In probe order: the guest names the first disk among them ``vda``."""
    bootargs: str
    initrd: Region | None = None


def mpidr(index: int) -> int:
    """The affinity KVM gives vCPU ``index`` by default (Aff0: its low 4 bits, Aff1: the next 8)."""
    return ((index >> 4) & 0xFF) << 8 | (index & 0xF)


def device_tree(board: Board) -> bytes:
    """The DTB of ``board``; raises ``ValueError`` for a board the bindings cannot describe."""
    if isinstance(board.gic, GicV2) and board.vcpus > GICV2_MAX_CPUS:
        raise ValueError(f"a GICv2 serves at most {GICV2_MAX_CPUS} vCPUs, not {board.vcpus}")
    root = Node("", {
        "compatible": string("linux,dummy-virt"), "#address-cells": cells(2), "#size-cells": cells(2),
        "interrupt-parent": cells(GIC_PHANDLE),
    })
    memory = board.memory
    root.child(f"memory@{memory.base:x}", {"device_type": string("memory"), "reg": pairs(memory.base, memory.size)})
    cpus = root.child("cpus", {"#address-cells": cells(1), "#size-cells": cells(0)})
    for index in range(board.vcpus):
        cpus.child(f"cpu@{mpidr(index):x}", {
            "device_type": string("cpu"), "compatible": string("arm,arm-v8"), "enable-method": string("psci"),
            "reg": cells(mpidr(index)),
        })
    root.child("psci", {"compatible": strings("arm,psci-1.0", "arm,psci-0.2"), "method": string("hvc")})
    root.children.append(_gic(board.gic))
    level_low = IRQ_TYPE_LEVEL_LOW
    if isinstance(board.gic, GicV2):  # its PPI specifiers also name the CPUs they go to
        level_low |= ((1 << board.vcpus) - 1) << 8
    root.child("timer", {
        "compatible": string("arm,armv8-timer"), "always-on": EMPTY,
        "interrupts": b"".join(cells(PPI, ppi, level_low) for ppi in TIMER_PPIS),
    })
    uart = _device(root, "uart", board.uart, IRQ_TYPE_EDGE_RISING)  # the VMM pulses it, as virtio
    uart.properties |= {"compatible": string("ns16550a"), "clock-frequency": cells(UART_CLOCK_HZ)}
    root.child("apb-pclk", {
        "compatible": string("fixed-clock"), "#clock-cells": cells(0), "clock-frequency": cells(PERIPHERAL_CLOCK_HZ),
        "clock-output-names": string("apb_pclk"), "phandle": cells(CLOCK_PHANDLE),
    })
    root.child(f"pl031@{board.rtc.base:x}", {
        "compatible": strings("arm,pl031", "arm,primecell"), "reg": pairs(board.rtc.base, board.rtc.size),
        "clocks": cells(CLOCK_PHANDLE), "clock-names": string("apb_pclk"),
    })
    for device in board.virtio:
        virtio = _device(root, "virtio_mmio", device, IRQ_TYPE_EDGE_RISING)
        virtio.properties |= {"compatible": string("virtio,mmio"), "dma-coherent": EMPTY}
    chosen = root.child("chosen", {"bootargs": string(board.bootargs), "stdout-path": string(f"/{uart.name}")})
    if board.initrd is not None:
        chosen.properties["linux,initrd-start"] = pairs(board.initrd.base)
        chosen.properties["linux,initrd-end"] = pairs(board.initrd.base + board.initrd.size)
    return blob(root)


def _gic(gic: GicV3 | GicV2) -> Node:
    if isinstance(gic, GicV3):
        compatible, second = "arm,gic-v3", gic.redistributors
    else:
        compatible, second = "arm,cortex-a15-gic", gic.cpu_interface
    return Node(f"intc@{gic.distributor.base:x}", {
        "compatible": string(compatible), "#interrupt-cells": cells(3), "interrupt-controller": EMPTY,
        "#address-cells": cells(0),  # no children (no ITS); interrupt-map users read it
        "reg": pairs(gic.distributor.base, gic.distributor.size, second.base, second.size),
        "phandle": cells(GIC_PHANDLE),
    })


def _device(root: Node, kind: str, device: MmioDevice, trigger: int) -> Node:
    registers = device.registers
    return root.child(f"{kind}@{registers.base:x}", {
        "reg": pairs(registers.base, registers.size), "interrupts": cells(SPI, device.spi, trigger),
    })
