"""The vGIC registers a snapshot keeps: offsets and counts as the GICv3 and GICv2 architectures lay them out."""

import pytest

from asupermachine._core.arch.aarch64.device_tree import mpidr
from asupermachine._core.arch.aarch64.vgic_state import (
    GROUP_CPU_REGS,
    GROUP_CPU_SYSREGS,
    GROUP_DISTRIBUTOR,
    GROUP_REDISTRIBUTOR,
    affinity_field,
    distributor_registers,
    redistributor_registers,
    sysreg_encoding,
    v2_vgic_registers,
    vgic_registers,
)


def test_the_distributor_keeps_each_spi_bank_priority_trigger_and_route() -> None:
    offsets = [register.attribute for register in distributor_registers(128)]
    assert offsets[0] == 0x0  # GICD_CTLR
    assert [o for o in offsets if 0x100 <= o < 0x180] == [0x104, 0x108, 0x10C]  # ISENABLER1-3: SPIs 32-127
    assert [o for o in offsets if 0x400 <= o < 0x800] == list(range(0x420, 0x480, 4))  # 96 SPIs, 4 a register
    assert [o for o in offsets if 0xC00 <= o < 0xD00] == [0xC08, 0xC0C, 0xC10, 0xC14, 0xC18, 0xC1C]
    assert [o for o in offsets if o >= 0x6000] == [0x6000 + 8 * irq for irq in range(32, 128)]
    assert len(offsets) == 1 + 5 * 3 + 24 + 6 + 96 and len(set(offsets)) == len(offsets)
    assert {(r.group, r.size) for r in distributor_registers(128)} == {(GROUP_DISTRIBUTOR, 4)}


@pytest.mark.parametrize("irqs", [32, 100, 0])
def test_a_vgic_without_spis_or_a_ragged_count_is_refused(irqs: int) -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        distributor_registers(irqs)


def test_each_vcpus_redistributor_and_cpu_interface_carry_its_affinity() -> None:
    assert affinity_field(mpidr(17)) == (1 << 40) | (1 << 32)  # Aff1 1, Aff0 1
    sgi_frame = [r.attribute & 0xFFFF_FFFF for r in redistributor_registers(mpidr(0))]
    assert sgi_frame[:5] == [0x10080, 0x10100, 0x10200, 0x10300, 0x10D00]
    assert sgi_frame[5:13] == list(range(0x10400, 0x10420, 4)) and sgi_frame[13:] == [0x10C00, 0x10C04]
    registers = vgic_registers(64, [mpidr(0), mpidr(17)])
    second = [r for r in registers if r.attribute >> 32 == affinity_field(mpidr(17)) >> 32]
    assert {r.group for r in second} == {GROUP_REDISTRIBUTOR, GROUP_CPU_SYSREGS}
    sysregs = [r for r in registers if r.group == GROUP_CPU_SYSREGS]
    assert len(sysregs) == 2 * 9 and {r.size for r in sysregs} == {8}
    assert sysregs[0].attribute & 0xFFFF == sysreg_encoding(3, 0, 12, 12, 5) == 0xC665  # ICC_SRE_EL1
    assert [r.group for r in registers] == sorted(r.group for r in registers)  # distributor, redistributors, CPUs


def test_a_gicv2_keeps_targets_not_routes_and_banks_each_vcpus_private_interrupts_by_index() -> None:
    registers = v2_vgic_registers(128, vcpus=2)
    shared = [r.attribute for r in registers if r.group == GROUP_DISTRIBUTOR and r.attribute >> 32 == 0]
    assert [o for o in shared if 0x800 <= o < 0xC00] == list(range(0x820, 0x880, 4))  # ITARGETSR8-23: 96 SPIs
    assert not [o for o in shared if o >= 0x6000 or 0xD00 <= o < 0xE00]  # no IROUTER, no IGRPMODR
    banked = [r.attribute for r in registers if r.group == GROUP_DISTRIBUTOR and r.attribute >> 32 == 1]
    assert banked == [
        (1 << 32) | o for o in (0x80, 0x100, 0x200, 0x300, *range(0x400, 0x420, 4), 0xC04, 0xF20, 0xF24, 0xF28, 0xF2C)
    ]
    cpu = [r.attribute for r in registers if r.group == GROUP_CPU_REGS]
    assert cpu == [vcpu << 32 | o for vcpu in (0, 1) for o in (0x00, 0x04, 0x08, 0x1C, 0xD0)]
    assert {r.size for r in registers} == {4}
