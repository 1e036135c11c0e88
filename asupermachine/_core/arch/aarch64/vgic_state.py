"""Which vGIC registers hold a VM's interrupt state, as KVM's device attributes name them (sans-IO).

A vGICv3 (Documentation/virt/kvm/devices/arm-vgic-v3.rst): the distributor's
registers (the shared interrupts' group, enable, pending, active, priority,
trigger and routing) by offset; each vCPU's redistributor (its SGIs' and PPIs',
in the SGI frame) by offset and affinity; each vCPU's CPU interface by system
register encoding and affinity (64-bit).

A vGICv2 (arm-vgic.rst): the distributor's registers by offset, a vCPU's banked
ones (its SGIs' and PPIs', and its pending SGIs) with the vCPU's index in the
attribute; each vCPU's memory-mapped CPU interface by offset and index.

Every register but the v3 CPU interface's is read and written 32 bits at a
time. A snapshot saves them in this order and a restore writes them back in
it, once the vCPUs exist and the vGIC is initialized.
"""

from __future__ import annotations

from dataclasses import dataclass

GROUP_DISTRIBUTOR, GROUP_CPU_REGS, GROUP_REDISTRIBUTOR, GROUP_CPU_SYSREGS = 1, 2, 5, 6
"""KVM_DEV_ARM_VGIC_GRP_DIST_REGS, _CPU_REGS (v2), _REDIST_REGS and _CPU_SYSREGS (v3)."""
PRIVATE_IRQS = 32
GICD_CTLR = 0x0000
ONE_BIT_BANKS = {"IGROUPR": 0x0080, "ISENABLER": 0x0100, "ISPENDR": 0x0200, "ISACTIVER": 0x0300, "IGRPMODR": 0x0D00}
"""Registers with a bit per interrupt; the distributor's cover the SPIs, the SGI frame's (at +64 KiB) the first 32."""
V2_ONE_BIT_BANKS = {name: offset for name, offset in ONE_BIT_BANKS.items() if name != "IGRPMODR"}
GICD_IPRIORITYR, GICD_ITARGETSR, GICD_ICFGR, GICD_SPENDSGIR, GICD_IROUTER = 0x0400, 0x0800, 0x0C00, 0x0F20, 0x6000
GICC_REGISTERS = {"GICC_CTLR": 0x00, "GICC_PMR": 0x04, "GICC_BPR": 0x08, "GICC_ABPR": 0x1C, "GICC_APR0": 0xD0}
"""A GICv2 CPU interface's state (KVM keeps one active-priority register, as for v3)."""
SGI_FRAME = 0x1_0000
CPU_INTERFACE_REGISTERS = {
    # (op0, op1, CRn, CRm, op2); SRE and CTLR first: they decide how the rest are read.
    "ICC_SRE_EL1": (3, 0, 12, 12, 5),
    "ICC_CTLR_EL1": (3, 0, 12, 12, 4),
    "ICC_PMR_EL1": (3, 0, 4, 6, 0),
    "ICC_BPR0_EL1": (3, 0, 12, 8, 3),
    "ICC_BPR1_EL1": (3, 0, 12, 12, 3),
    "ICC_AP0R0_EL1": (3, 0, 12, 8, 4),
    "ICC_AP1R0_EL1": (3, 0, 12, 9, 0),
    "ICC_IGRPEN0_EL1": (3, 0, 12, 12, 6),
    "ICC_IGRPEN1_EL1": (3, 0, 12, 12, 7),
}
"""The CPU interface's state with 5 bits of priority (KVM's), so one active-priority register per group."""


@dataclass(frozen=True)
class VgicRegister:
    group: int
    attribute: int
    size: int
    """Bytes: 4, or 8 for the CPU interface's system registers."""


def affinity_field(mpidr: int) -> int:
    """A vCPU's affinity as the attributes carry it in bits 63-32: Aff3, Aff2, Aff1, Aff0, a byte each."""
    aff0, aff1, aff2, aff3 = mpidr & 0xFF, (mpidr >> 8) & 0xFF, (mpidr >> 16) & 0xFF, (mpidr >> 32) & 0xFF
    return (aff3 << 56) | (aff2 << 48) | (aff1 << 40) | (aff0 << 32)


def sysreg_encoding(op0: int, op1: int, crn: int, crm: int, op2: int) -> int:
    return (op0 << 14) | (op1 << 11) | (crn << 7) | (crm << 3) | op2


def distributor_registers(irqs: int, version: int = 3) -> list[VgicRegister]:
    """The distributor's registers for the SPIs of a vGIC of ``version`` serving ``irqs`` interrupt ids (a
    multiple of 32)."""
    if irqs % 32 or irqs <= PRIVATE_IRQS:
        raise ValueError(f"a vGIC serves a multiple of 32 interrupt ids above 32, not {irqs}")
    spis = range(PRIVATE_IRQS, irqs)
    offsets = [GICD_CTLR]
    for base in (ONE_BIT_BANKS if version == 3 else V2_ONE_BIT_BANKS).values():
        offsets += [base + irq // 8 for irq in spis[::32]]
    offsets += [GICD_IPRIORITYR + irq for irq in spis[::4]]
    offsets += [GICD_ICFGR + irq // 4 for irq in spis[::16]]
    if version == 3:
        offsets += [GICD_IROUTER + 8 * irq for irq in spis]  # the low word: KVM keeps no Aff3
    else:
        offsets += [GICD_ITARGETSR + irq for irq in spis[::4]]
    return [VgicRegister(GROUP_DISTRIBUTOR, offset, 4) for offset in offsets]


def redistributor_registers(mpidr: int) -> list[VgicRegister]:
    """The SGI frame's registers of the vCPU with affinity ``mpidr``: its 16 SGIs and 16 PPIs."""
    offsets = [SGI_FRAME + base for base in ONE_BIT_BANKS.values()]
    offsets += [SGI_FRAME + GICD_IPRIORITYR + irq for irq in range(0, PRIVATE_IRQS, 4)]
    offsets += [SGI_FRAME + GICD_ICFGR, SGI_FRAME + GICD_ICFGR + 4]
    affinity = affinity_field(mpidr)
    return [VgicRegister(GROUP_REDISTRIBUTOR, affinity | offset, 4) for offset in offsets]


def cpu_interface_registers(mpidr: int) -> list[VgicRegister]:
    """The CPU interface's system registers of the vCPU with affinity ``mpidr``."""
    affinity = affinity_field(mpidr)
    return [
        VgicRegister(GROUP_CPU_SYSREGS, affinity | sysreg_encoding(*encoding), 8)
        for encoding in CPU_INTERFACE_REGISTERS.values()
    ]


def vgic_registers(irqs: int, mpidrs: list[int]) -> list[VgicRegister]:
    """Every register of a vGICv3 with ``irqs`` interrupt ids and vCPUs of affinities ``mpidrs``, in restore order."""
    registers = distributor_registers(irqs)
    for mpidr in mpidrs:
        registers += redistributor_registers(mpidr)
    for mpidr in mpidrs:
        registers += cpu_interface_registers(mpidr)
    return registers


def v2_banked_registers(vcpu: int) -> list[VgicRegister]:
    """The distributor's registers banked for vCPU ``vcpu`` (its index): its 16 SGIs and 16 PPIs."""
    offsets = list(V2_ONE_BIT_BANKS.values())
    offsets += [GICD_IPRIORITYR + irq for irq in range(0, PRIVATE_IRQS, 4)]
    offsets += [GICD_ICFGR + 4]  # the PPIs' (the SGIs' are fixed)
    offsets += [GICD_SPENDSGIR + 4 * sgis for sgis in range(4)]  # which vCPUs each pending SGI came from
    return [VgicRegister(GROUP_DISTRIBUTOR, vcpu << 32 | offset, 4) for offset in offsets]


def v2_vgic_registers(irqs: int, vcpus: int) -> list[VgicRegister]:
    """Every register of a vGICv2 with ``irqs`` interrupt ids and ``vcpus`` vCPUs, in restore order."""
    registers = distributor_registers(irqs, version=2)
    for vcpu in range(vcpus):
        registers += v2_banked_registers(vcpu)
    for vcpu in range(vcpus):
        registers += [VgicRegister(GROUP_CPU_REGS, vcpu << 32 | offset, 4) for offset in GICC_REGISTERS.values()]
    return registers
