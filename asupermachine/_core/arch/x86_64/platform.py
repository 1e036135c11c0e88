"""An x86_64 VM's platform: the in-kernel irqchip and PIT, the legacy ports, a boot's kernel and tables, the vCPUs.

The guest boots Linux's 64-bit entry (``startup_64``) with the boot protocol's
zero page, identity-mapped page tables and an MP table; virtio-mmio devices are
declared on the command line. The guest's exit comes through ports: the i8042's
reset line, and the project's exit-status and power-off ports
(guest/kernel/patches/0004-exit-ports.patch).
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING

from ...._errors import AssetError, KernelImageError
from ...._outcome import GuestExit, ShutdownReason
from ...device_manager import X86_64_SLOTS, MmioDeviceManager
from ...devices.shutdown_ports import EXIT_STATUS_PORT, I8042, I8042_DATA_PORT, ExitPorts
from ...devices.uart import COM1_BASE, COM1_IRQ, UART_PORT_COUNT, Uart
from ...devices.vector_state import XSTATE_PORT_RANGE, XSTATE_SAVE_PORT, TaskVectorStates, VectorStatePorts
from ...init_config import InitConfig, initrd_with
from ...kvm import VcpuFd
from ...kvm._kvm_cffi import lib
from ...kvm.state import StateKind, get_state
from ...memory import GuestMemory
from ...persist import MachineState, advanced, capture_vcpu, capture_vm, restore_vcpu, restore_vm
from ...recipe import VmRecipe
from . import layout
from .boot_params import build_zero_page, e820_map
from .cmdline import kernel_cmdline
from .cpu_state import boot_memory_contents, setup_boot_vcpu, setup_common_vcpu_state
from .cpuid import guest_cpuid
from .elf import load_vmlinux
from .mptable import mptable
from .paging import identity_page_tables

if TYPE_CHECKING:
    from ...microvm import MicroVm

I8042_PORT_COUNT = 5
EXIT_PORT_COUNT = 2
MAX_INSTRUCTION_BYTES = 15
SYSTEM_EVENTS = {
    lib.KVM_SYSTEM_EVENT_SHUTDOWN: ShutdownReason.POWER_OFF,
    lib.KVM_SYSTEM_EVENT_RESET: ShutdownReason.RESET,
    lib.KVM_SYSTEM_EVENT_CRASH: ShutdownReason.PANIC,
}


class X86Platform:
    """What an x86_64 VM has besides its virtio devices; :meth:`create` then, for a boot, :meth:`load_guest`."""

    virtio_slots = X86_64_SLOTS

    @staticmethod
    def ram_layout(memory_size: int) -> list[tuple[int, int]]:
        return layout.ram_layout(memory_size)

    def create(self, microvm: MicroVm) -> None:
        """The irqchip, PIT and RAM slots, then COM1, the i8042, the exit ports and the vector-state ports."""
        fd = microvm.vm_fd
        fd.set_identity_map_addr(layout.KVM_IDENTITY_MAP_ADDR)
        fd.set_tss_addr(layout.KVM_TSS_ADDR)
        fd.create_irqchip()
        fd.create_pit2()
        for slot, region in enumerate(microvm.memory.regions):
            fd.set_user_memory_region(slot, region.guest_phys_addr, region.size, microvm.memory.host_address(region))
        request = microvm.stop.request

        def pulse_com1() -> None:
            fd.set_irq_line(COM1_IRQ, True)
            fd.set_irq_line(COM1_IRQ, False)

        microvm.uart = uart = Uart(output=microvm.console.feed, interrupt=pulse_com1)
        microvm.uart_lock = uart_lock = microvm.pio.register(COM1_BASE, UART_PORT_COUNT, uart)

        def type_into_console(data: bytes) -> int:
            with uart_lock:
                return uart.receive(data)

        microvm.console.attach_input(type_into_console)
        microvm.pio.register(I8042_DATA_PORT, I8042_PORT_COUNT, I8042(request))
        microvm.pio.register(EXIT_STATUS_PORT, EXIT_PORT_COUNT, ExitPorts(request))
        microvm.vector_states = VectorStatePorts(TaskVectorStates())
        microvm.pio.register(XSTATE_SAVE_PORT, XSTATE_PORT_RANGE, microvm.vector_states)

    @staticmethod
    def cmdline(recipe: VmRecipe, devices: MmioDeviceManager) -> str:
        """The kernel's words for a boot of ``recipe`` with ``devices`` registered."""
        return kernel_cmdline(
            cpu_model=recipe.cpu_model, kernel_log=recipe.kernel_log, extra=recipe.cmdline_extra,
            devices=devices.kernel_arguments,
        )

    @staticmethod
    def boot(microvm: MicroVm, cmdline: str, config: InitConfig) -> None:
        """Place kernel, initramfs with init's ``config``, command line and boot tables; the vCPUs' boot state."""
        if len(cmdline) + 1 > layout.CMDLINE_MAX_SIZE:
            raise ValueError(
                f"kernel command line is {len(cmdline)} bytes, over the limit of {layout.CMDLINE_MAX_SIZE - 1}:"
                " shorten the extra kernel arguments"
            )
        memory, recipe = microvm.memory, microvm.recipe
        kernel = load_vmlinux(recipe.kernel, memory)
        initrd_addr, initrd_size = _load_initramfs(microvm, kernel.end, config)
        encoded = cmdline.encode() + b"\0"
        memory.write(layout.CMDLINE_ADDR, encoded)
        contents = {**identity_page_tables(), **boot_memory_contents()}
        contents[layout.MPTABLE_ADDR] = mptable(layout.MPTABLE_ADDR, recipe.vcpus)
        ram = [(region.guest_phys_addr, region.size) for region in memory.regions]
        contents[layout.ZERO_PAGE_ADDR] = build_zero_page(
            cmdline_addr=layout.CMDLINE_ADDR,
            cmdline_size=len(encoded) - 1,
            e820=e820_map(ram),
            initrd_addr=initrd_addr,
            initrd_size=initrd_size,
        )
        for gpa, data in contents.items():
            memory.write(gpa, data)
        for vcpu in microvm.vcpus:
            setup_common_vcpu_state(vcpu)
        setup_boot_vcpu(microvm.vcpus[0], kernel.entry)

    @staticmethod
    def create_vcpus(microvm: MicroVm) -> None:
        """The vCPUs with this host's CPUID for the model."""
        supported = microvm.kvm.supported_cpuid()
        count = microvm.recipe.vcpus
        microvm.watch_stats(microvm.vm_fd.fd)
        for index in range(count):
            vcpu = microvm.vm_fd.create_vcpu(index)
            microvm.vcpus.append(vcpu)
            microvm.watch_stats(vcpu.fd)
            cpuid = tuple(guest_cpuid(supported, microvm.recipe.cpu_model, index, count))
            microvm.cpuid.append(cpuid)
            vcpu.set_cpuid(list(cpuid))
        microvm.arm_pause()

    @staticmethod
    def system_exit(vcpu: VcpuFd, event: int, flags: int) -> GuestExit:
        """How the guest ended, from its ``KVM_EXIT_SYSTEM_EVENT``."""
        return GuestExit(SYSTEM_EVENTS.get(event, ShutdownReason.RESET))

    @staticmethod
    def where(vcpu: VcpuFd, memory: GuestMemory) -> tuple[int | None, bytes]:
        """The vCPU's instruction pointer and the bytes there, for a diagnosis (None, b"" where KVM will not say)."""
        rip: int | None = None
        instruction = b""
        with contextlib.suppress(OSError):
            rip = int(vcpu.get_regs().rip)
            physical = vcpu.translate(rip)
            if physical is not None and memory.contains(physical, MAX_INSTRUCTION_BYTES):
                instruction = memory.read(physical, MAX_INSTRUCTION_BYTES)
        return rip, instruction

    @staticmethod
    def idle(microvm: MicroVm, ran_ns: int) -> bool:
        """Every vCPU halted: x86's KVM keeps a vCPU's HLT as its run state out of ``KVM_RUN``."""
        return all(
            int.from_bytes(get_state(vcpu.fd, StateKind.MP_STATE)[:4], "little") == lib.KVM_MP_STATE_HALTED
            for vcpu in microvm.vcpus
        )

    @staticmethod
    def capture(microvm: MicroVm) -> MachineState:
        """The quiesced VM's state, memory aside (see :meth:`MicroVm.quiesced`)."""
        msr_indices = microvm.kvm.msr_index_list()
        return MachineState(
            vcpus=tuple(
                capture_vcpu(vcpu, cpuid, msr_indices) for vcpu, cpuid in zip(microvm.vcpus, microvm.cpuid, strict=True)
            ),
            vm=capture_vm(microvm.vm_fd),
            transports=microvm.devices.save(),
            uart=microvm.uart.save(),
            captured_at_ns=time.time_ns(),
            tsc_khz=microvm.vcpus[0].tsc_khz(),
            task_vector_states=microvm.vector_states.states.state(),
        )

    @staticmethod
    def restore(microvm: MicroVm, state: MachineState) -> None:
        """Put back a snapshot's KVM state into the new VM, its clocks moved on by the snapshot's age."""
        state = advanced(state, time.time_ns() - state.captured_at_ns)
        restore_vm(microvm.vm_fd, state.vm)
        for vcpu, vcpu_state in zip(microvm.vcpus, state.vcpus, strict=True):
            restore_vcpu(vcpu, vcpu_state)
        microvm.vector_states.states = TaskVectorStates(state.task_vector_states)

    def close(self) -> None:
        """Nothing of its own: the irqchip and PIT go with the VM."""


def _load_initramfs(microvm: MicroVm, kernel_end: int, config: InitConfig) -> tuple[int, int]:
    """Put the initramfs and init's configuration at the top of low RAM, page-aligned, clear of the kernel."""
    path = microvm.recipe.initramfs
    try:
        data = initrd_with(path.read_bytes(), config)
    except OSError as e:
        raise AssetError(f"cannot read initramfs {path}: {e.strerror}") from None
    low_ram_end = microvm.memory.regions[0].end
    addr = (low_ram_end - len(data)) & ~(layout.PAGE_SIZE - 1)
    if addr < kernel_end:
        raise KernelImageError(
            f"kernel and a {len(data)}-byte initramfs do not fit in {microvm.recipe.memory_mib} MiB of RAM"
        )
    microvm.memory.write(addr, data)
    return addr, len(data)
