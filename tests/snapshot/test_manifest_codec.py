"""``snapshot.json`` keeps an arm64 VM's state whole: each vCPU's registers and the vGIC's."""

from __future__ import annotations

from pathlib import Path

from asupermachine._core.arch.x86_64.cpuid import CpuModel
from asupermachine._core.devices.uart import UartState
from asupermachine._core.kvm.host import KvmHost
from asupermachine._core.kvm.state import StateKind
from asupermachine._core.persist import MachineState, VcpuState
from asupermachine._core.recipe import VmRecipe
from asupermachine.snapshot.manifest import Manifest, decode, encode
from asupermachine.snapshot.memory_file import MemoryImage

PC = 0x6030_0000_0010_0040  # KVM_REG_ARM64 | U64 | CORE | regs.pc


def test_an_arm64_state_round_trips_with_its_registers_and_vgic() -> None:
    vcpus = tuple(
        VcpuState((), {StateKind.MP_STATE: bytes(4)}, {}, registers={PC: (0x4020_0000 + i).to_bytes(8, "little")})
        for i in range(2)
    )
    state = MachineState(
        vcpus, {}, {}, UartState(0, 3, 8, 0, 12, False, b""), captured_at_ns=5, tsc_khz=0, task_vector_states={},
        vgic=(b"\x01\0\0\0", bytes(8)),
    )
    recipe = VmRecipe(kernel=Path("/k/Image"), initramfs=Path("/k/initramfs.cpio"), disks=(),
                      cpu_model=CpuModel.HOST, vcpus=2)
    manifest = Manifest(recipe, {"/k/Image": "a" * 64, "/k/initramfs.cpio": "b" * 64},
                        MemoryImage(1 << 20, ((0, 4096),), "c" * 128), state,
                        KvmHost("kvm", "implementer 0x41 part 0xd0c"))
    assert decode(encode(manifest), Path("snapshot.json")).state == state
