"""The device tree writer, read back by dtc (Debian's device-tree-compiler), the reference reader."""

import subprocess
from pathlib import Path

import pytest

from asupermachine._core.arch.aarch64 import fdt
from asupermachine._core.arch.aarch64.device_tree import Board, GicV2, GicV3, MmioDevice, Region, device_tree, mpidr

MIB = 1 << 20


def decompiled(blob: bytes, tmp_path: Path) -> str:
    """The blob as dtc decompiles it (``-I dtb -O dts``), with dtc's warnings treated as failures."""
    path = tmp_path / "tree.dtb"
    path.write_bytes(blob)
    result = subprocess.run(["dtc", "-I", "dtb", "-O", "dts", str(path)], capture_output=True, text=True)
    assert result.returncode == 0 and not result.stderr, result.stderr
    return result.stdout


def board(vcpus: int = 2, gic: GicV3 | GicV2 | None = None, initrd: Region | None = None) -> Board:
    return Board(
        memory=Region(0x8000_0000, 256 * MIB), vcpus=vcpus,
        gic=gic or GicV3(Region(0x0800_0000, 0x1_0000), Region(0x080A_0000, vcpus * 0x2_0000)),
        uart=MmioDevice(Region(0x0900_0000, 0x1000), 1), rtc=Region(0x0901_0000, 0x1000),
        virtio=[MmioDevice(Region(0x0A00_0000 + i * 0x200, 0x200), 16 + i) for i in range(2)],
        bootargs='console=ttyS0 quiet init=/init "quoted"', initrd=initrd,
    )


def test_a_node_with_properties_and_children_reads_back_as_written(tmp_path: Path) -> None:
    root = fdt.Node("", {"#address-cells": fdt.cells(2), "#size-cells": fdt.cells(2), "model": fdt.string("x")})
    child = root.child("dev@1000", {"reg": fdt.pairs(0x1000, 0x10), "flag": fdt.EMPTY})
    child.child("sub", {"names": fdt.strings("a", "bc"), "odd": b"\x01\x02\x03"})
    blob = fdt.blob(root, reserved=[(0x4000_0000, 0x1000)])
    magic, total, *_ = fdt.HEADER.unpack_from(blob)
    assert (magic, total) == (0xD00DFEED, len(blob))
    text = decompiled(blob, tmp_path)
    assert "/memreserve/\t0x0000000040000000 0x0000000000001000;" in text
    for expected in (
        "#address-cells = <0x02>;", 'model = "x";', "dev@1000 {", "reg = <0x00 0x1000 0x00 0x10>;", "flag;",
        'names = "a\\0bc";', "odd = [01 02 03];",
    ):
        assert expected in text, text


@pytest.mark.parametrize(
    ("node", "why"),
    [
        (fdt.Node("", children=[fdt.Node("bad name")]), "node name"),
        (fdt.Node("", {"bad=name": b""}), "property name"),
        (fdt.Node("", children=[fdt.Node("twin"), fdt.Node("twin")]), "two children"),
    ],
)
def test_names_the_spec_does_not_allow_are_refused(node: fdt.Node, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        fdt.blob(node)


def test_the_guest_s_tree_describes_memory_cpus_gic_timer_uart_virtio_and_chosen(tmp_path: Path) -> None:
    text = decompiled(device_tree(board(vcpus=18, initrd=Region(0x8f00_0000, 0x12345))), tmp_path)
    for expected in (
        'compatible = "linux,dummy-virt";', "interrupt-parent = <0x01>;",
        "memory@80000000 {", 'device_type = "memory";', "reg = <0x00 0x80000000 0x00 0x10000000>;",
        "cpu@0 {", "cpu@f {", "cpu@100 {", "cpu@101 {", 'enable-method = "psci";',  # vCPU 16: Aff1 1, Aff0 0
        'compatible = "arm,psci-1.0\\0arm,psci-0.2";', 'method = "hvc";',
        "intc@8000000 {", 'compatible = "arm,gic-v3";', "#interrupt-cells = <0x03>;", "interrupt-controller;",
        "reg = <0x00 0x8000000 0x00 0x10000 0x00 0x80a0000 0x00 0x240000>;", "phandle = <0x01>;",
        'compatible = "arm,armv8-timer";',
        "interrupts = <0x01 0x0d 0x08 0x01 0x0e 0x08 0x01 0x0b 0x08 0x01 0x0a 0x08>;",
        "uart@9000000 {", 'compatible = "ns16550a";', "interrupts = <0x00 0x01 0x01>;",
        "virtio_mmio@a000200 {", 'compatible = "virtio,mmio";', "interrupts = <0x00 0x11 0x01>;", "dma-coherent;",
        'compatible = "fixed-clock";', "#clock-cells = <0x00>;", "clock-frequency = <0x16e3600>;",
        "pl031@9010000 {", 'compatible = "arm,pl031\\0arm,primecell";', "reg = <0x00 0x9010000 0x00 0x1000>;",
        "clocks = <0x02>;", 'clock-names = "apb_pclk";',
        'bootargs = "console=ttyS0 quiet init=/init \\"quoted\\"";', 'stdout-path = "/uart@9000000";',
        "linux,initrd-start = <0x00 0x8f000000>;", "linux,initrd-end = <0x00 0x8f012345>;",
    ):
        assert expected in text, f"{expected} not in\n{text}"
    assert text.count("device_type = \"cpu\";") == 18 and [mpidr(i) for i in (15, 16, 17)] == [0xF, 0x100, 0x101]


def test_a_gicv2_board_names_its_cpu_interface_and_the_timer_s_target_cpus(tmp_path: Path) -> None:
    gic = GicV2(Region(0x0800_0000, 0x1_0000), Region(0x0801_0000, 0x1_0000))
    text = decompiled(device_tree(board(vcpus=2, gic=gic)), tmp_path)
    assert 'compatible = "arm,cortex-a15-gic";' in text and "linux,initrd-start" not in text
    assert "interrupts = <0x01 0x0d 0x308 0x01 0x0e 0x308 0x01 0x0b 0x308 0x01 0x0a 0x308>;" in text
    with pytest.raises(ValueError, match="at most 8 vCPUs"):
        device_tree(board(vcpus=9, gic=gic))
