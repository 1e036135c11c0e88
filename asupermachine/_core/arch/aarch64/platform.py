"""An arm64 VM's platform: the in-kernel vGIC, the UART, a boot's kernel, initrd and device tree, the vCPUs.

As booting.rst asks: the Image ``text_offset`` above a 2 MiB boundary of RAM,
the device tree and initrd at the top of RAM, and the boot vCPU entering the
Image with x0 = the device tree's address, at EL1 with interrupts masked. The
other vCPUs start powered off until the guest's PSCI ``CPU_ON``. The guest's
exit is PSCI too: ``SYSTEM_OFF``, ``SYSTEM_RESET``, and the project's kernel
reports init's exit status as a vendor ``SYSTEM_RESET2`` whose cookie is the
status (guest/kernel/patches/0008-psci-exit-status.patch).
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING

from ...._errors import AssetError
from ...._outcome import GuestExit, ShutdownReason
from ...device_manager import MmioDeviceManager, SlotPlan
from ...devices.pl031 import Pl031
from ...devices.uart import Uart
from ...init_config import InitConfig, initrd_with
from ...kvm import VcpuFd
from ...kvm import aarch64 as kvm
from ...kvm._kvm_cffi import lib
from ...kvm.state import StateKind, get_state, set_state
from ...memory import GuestMemory
from ...persist import MachineState, VcpuState
from ...recipe import VmRecipe
from ...virtio.mmio import VIRTIO_MMIO_SIZE
from ..kernel_words import QUIET_ARGUMENTS
from . import layout
from .clock import counter_advanced, waited_through
from .device_tree import Board, MmioDevice, Region, device_tree, mpidr
from .image import arm64_kernel, boot_layout
from .vgic_state import VgicRegister, v2_vgic_registers, vgic_registers

if TYPE_CHECKING:
    from ...microvm import MicroVm

# Console on the UART; a panic powers off at once; no crypto self-tests or mitigations, which cost guest time.
BASE_ARGUMENTS = ("console=ttyS0", "panic=-1", "cryptomgr.notests", "mitigations=off")
PSTATE_EL1H_MASKED = 0x3C5
"""EL1 with its own stack (EL1h), D, A, I and F masked: how booting.rst says the kernel is entered."""
VENDOR_RESET_TYPE = 0x8000_0000
"""PSCI 1.1's first vendor-specific SYSTEM_RESET2 type: init's exit status is the cookie."""
UART_PORT_COUNT = 8


class Arm64Platform:
    """What an arm64 VM has besides its virtio devices; :meth:`create` then, for a boot, :meth:`load_guest`."""

    virtio_slots = SlotPlan(layout.VIRTIO_MMIO_BASE, layout.FIRST_VIRTIO_SPI, layout.LAST_VIRTIO_SPI)

    def __init__(self) -> None:
        self._vgic: kvm.Vgic | None = None
        self._waited_ns: int | None = None
        """How long the vCPUs had waited for interrupts (KVM's ``halt_wait_ns``) at :meth:`idle`'s last look."""

    @staticmethod
    def ram_layout(memory_size: int) -> list[tuple[int, int]]:
        return layout.ram_layout(memory_size)

    def create(self, microvm: MicroVm) -> None:
        """Guest RAM's slots, the vGIC (v3, else v2), the UART and the RTC."""
        fd = microvm.vm_fd
        for slot, region in enumerate(microvm.memory.regions):
            fd.set_user_memory_region(slot, region.guest_phys_addr, region.size, microvm.memory.host_address(region))
        try:
            self._vgic = kvm.Vgic(fd, version=3, distributor=layout.GIC_DISTRIBUTOR.base,
                                  second=layout.GICV3_REDISTRIBUTORS_BASE)
        except OSError:  # a host whose GIC cannot run a virtual GICv3
            self._vgic = kvm.Vgic(fd, version=2, distributor=layout.GIC_DISTRIBUTOR.base,
                                  second=layout.GICV2_CPU_INTERFACE.base)
        line = kvm.spi_line(layout.UART.spi)

        def pulse() -> None:  # the device tree says edge-rising
            fd.set_irq_line(line, True)
            fd.set_irq_line(line, False)

        microvm.uart = uart = Uart(output=microvm.console.feed, interrupt=pulse)
        microvm.uart_lock = uart_lock = microvm.mmio.register(layout.UART.registers.base, UART_PORT_COUNT, uart)

        def type_into_console(data: bytes) -> int:
            with uart_lock:
                return uart.receive(data)

        microvm.console.attach_input(type_into_console)
        microvm.mmio.register(layout.RTC.base, layout.RTC.size, Pl031())

    @staticmethod
    def cmdline(recipe: VmRecipe, devices: MmioDeviceManager) -> str:
        """The kernel's words for a boot of ``recipe`` (its devices are in the device tree)."""
        words = [*BASE_ARGUMENTS, *([] if recipe.kernel_log else QUIET_ARGUMENTS)]
        return " ".join([*words, recipe.cmdline_extra] if recipe.cmdline_extra else words)

    def board(self, microvm: MicroVm, bootargs: str, initrd: Region | None) -> Board:
        """What the device tree tells the guest it runs on."""
        (ram,) = microvm.memory.regions
        return Board(
            memory=Region(ram.guest_phys_addr, ram.size),
            vcpus=microvm.recipe.vcpus,
            gic=layout.gic(self._created_vgic().version, microvm.recipe.vcpus),
            uart=layout.UART,
            rtc=layout.RTC,
            virtio=[MmioDevice(Region(service.slot.base, VIRTIO_MMIO_SIZE), service.slot.irq)
                    for _, service in microvm.devices],
            bootargs=bootargs,
            initrd=initrd,
        )

    def boot(self, microvm: MicroVm, cmdline: str, config: InitConfig) -> None:
        """Place the Image, the initramfs with init's ``config`` and the device tree; vCPU 0 enters the Image.

        Raises :class:`KernelImageError` or :class:`AssetError`.
        """
        recipe, memory = microvm.recipe, microvm.memory
        try:
            kernel = arm64_kernel(recipe.kernel.read_bytes())
            initrd = initrd_with(recipe.initramfs.read_bytes(), config)
        except OSError as error:
            raise AssetError(f"cannot read the kernel or initramfs: {error}") from None
        (ram,) = memory.regions
        placed = boot_layout(kernel, ram.guest_phys_addr, ram.size, len(initrd))
        memory.write(placed.kernel, kernel.image)
        memory.write(placed.initrd, initrd)
        memory.write(placed.dtb, device_tree(self.board(microvm, cmdline, Region(placed.initrd, len(initrd)))))
        first = microvm.vcpus[0]
        kvm.set_core_register(first, kvm.CORE_PSTATE, PSTATE_EL1H_MASKED)
        kvm.set_core_register(first, kvm.CORE_PC, placed.kernel)
        kvm.set_core_register(first, kvm.CORE_X0, placed.dtb)

    def create_vcpus(self, microvm: MicroVm) -> None:
        """The vCPUs, initialized with PSCI (all but the first powered off), then the vGIC."""
        microvm.watch_stats(microvm.vm_fd.fd)
        for index in range(microvm.recipe.vcpus):
            vcpu = microvm.vm_fd.create_vcpu(index)
            microvm.vcpus.append(vcpu)
            microvm.watch_stats(vcpu.fd)
            kvm.init_vcpu(microvm.vm_fd, vcpu, powered_off=index > 0)
        self._created_vgic().initialize()
        microvm.arm_pause()

    @staticmethod
    def system_exit(vcpu: VcpuFd, event: int, flags: int) -> GuestExit:
        """How the guest ended, from its ``KVM_EXIT_SYSTEM_EVENT`` (its PSCI call)."""
        if event == lib.KVM_SYSTEM_EVENT_RESET and flags & lib.KVM_SYSTEM_EVENT_RESET_FLAG_PSCI_RESET2:
            reset_type = int.from_bytes(kvm.get_register(vcpu, kvm.core_register(1)), "little")
            if reset_type == VENDOR_RESET_TYPE:
                cookie = int.from_bytes(kvm.get_register(vcpu, kvm.core_register(2)), "little")
                return GuestExit(ShutdownReason.EXIT, cookie & 0xFF)
        if event == lib.KVM_SYSTEM_EVENT_SHUTDOWN:
            return GuestExit(ShutdownReason.POWER_OFF)
        return GuestExit(ShutdownReason.RESET)

    @staticmethod
    def where(vcpu: VcpuFd, memory: GuestMemory) -> tuple[int | None, bytes]:
        """The vCPU's program counter, for a diagnosis (None where KVM will not say; no instruction bytes: the
        address is virtual and translating it would need a walk of the guest's page tables)."""
        with contextlib.suppress(OSError):
            return int.from_bytes(kvm.get_register(vcpu, kvm.core_register(kvm.CORE_PC)), "little"), b""
        return None, b""

    def idle(self, microvm: MicroVm, ran_ns: int) -> bool:
        """Whether the vCPUs spent most of the ``ran_ns`` they ran since the last look waiting for interrupts."""
        waited = microvm.kvm_stats().get("halt_wait_ns")
        if waited is None:  # no statistics from this KVM: never idle, as if the guest never settled
            return False
        last, self._waited_ns = self._waited_ns, waited
        return last is not None and waited_through(waited - last, ran_ns, len(microvm.vcpus))

    def capture(self, microvm: MicroVm) -> MachineState:
        """The quiesced VM's state, memory aside: each vCPU's registers and run state, the vGIC's registers."""
        vgic = self._created_vgic()
        return MachineState(
            vcpus=tuple(
                VcpuState((), {StateKind.MP_STATE: get_state(vcpu.fd, StateKind.MP_STATE)}, {},
                          registers=kvm.registers(vcpu))
                for vcpu in microvm.vcpus
            ),
            vm={},
            transports=microvm.devices.save(),
            uart=microvm.uart.save(),
            captured_at_ns=time.time_ns(),
            tsc_khz=0,
            task_vector_states={},
            vgic=tuple(vgic.save(self._vgic_registers(microvm))),
        )

    def restore(self, microvm: MicroVm, state: MachineState) -> None:
        """Put back :meth:`capture`'s registers into the new VM's vCPUs and vGIC, the virtual counter moved on
        by the snapshot's age (:mod:`.clock`)."""
        elapsed_ns, frequency = time.time_ns() - state.captured_at_ns, kvm.counter_frequency()
        for vcpu, saved in zip(microvm.vcpus, state.vcpus, strict=True):
            for register, value in counter_advanced(saved.registers, elapsed_ns, frequency).items():
                kvm.set_register(vcpu, register, value)
            set_state(vcpu.fd, StateKind.MP_STATE, saved.kvm[StateKind.MP_STATE])
        self._created_vgic().restore(self._vgic_registers(microvm), state.vgic)

    def _vgic_registers(self, microvm: MicroVm) -> list[VgicRegister]:
        vcpus = len(microvm.vcpus)
        if self._created_vgic().version == 2:
            return v2_vgic_registers(kvm.VGIC_NR_IRQS, vcpus)
        return vgic_registers(kvm.VGIC_NR_IRQS, [mpidr(index) for index in range(vcpus)])

    def _created_vgic(self) -> kvm.Vgic:
        assert self._vgic is not None, "create() first"
        return self._vgic

    def close(self) -> None:
        if self._vgic is not None:
            self._vgic.close()
