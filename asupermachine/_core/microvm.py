"""Assemble one bootable x86_64 microVM on KVM: memory, boot state, devices, vCPUs (no async)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .._errors import AssetError, KernelImageError, VirtqueueError
from .arch.x86_64 import layout
from .arch.x86_64.boot_params import build_zero_page, e820_map
from .arch.x86_64.cpu_state import boot_memory_contents, setup_boot_vcpu, setup_common_vcpu_state
from .arch.x86_64.cpuid import CpuModel, guest_cpuid
from .arch.x86_64.elf import load_vmlinux
from .arch.x86_64.mptable import mptable
from .arch.x86_64.paging import identity_page_tables
from .console import Console
from .devices.bus import Bus
from .devices.shutdown_ports import EXIT_STATUS_PORT, I8042_DATA_PORT, ExitPorts, I8042
from .devices.uart import COM1_BASE, COM1_IRQ, UART_PORT_COUNT, Uart
from .devices.vector_state import XSTATE_PORT_RANGE, XSTATE_SAVE_PORT, TaskVectorStates, VectorStatePorts
from .kvm import Kvm, VcpuFd, VmFd
from .kvm._kvm_cffi import lib
from .kvm.state import StateKind, get_state
from .memory import GuestMemory
from ..snapshot.errors import SnapshotError
from ..snapshot.state import CpuidRows, MachineState, advanced, capture_vcpu, capture_vm, restore_vcpu, restore_vm
from .vcpu.pause import PauseGate
from .vcpu.runner import VcpuRunner
from .vcpu.stop import StopLatch
from .virtio.mmio import VirtioDevice
from .virtio.service import MmioSlot, VirtioService

MIB = 1 << 20
MIN_MEMORY_MIB = 64
I8042_PORT_COUNT = 5
EXIT_PORT_COUNT = 2
IDLE_POLL_INTERVAL = 0.005


@dataclass(frozen=True)
class BootConfig:
    kernel: Path
    initramfs: Path | None
    cmdline: str
    vcpus: int
    memory_mib: int
    cpu_model: CpuModel
    virtio_devices: tuple[VirtioDevice, ...] = ()
    """Devices in slot order: ``MmioSlot.numbered(i)`` for the i-th, as ``cmdline`` declares them."""


@dataclass(frozen=True)
class RestorePoint:
    """Where a restored VM starts: its saved state and the file holding its memory."""

    state: MachineState
    memory_file: Path


class MicroVm:
    """The KVM side of one VM, ready to run: call :meth:`runners` and run each on its own thread.

    It boots ``config`` from its kernel, or, given a :class:`RestorePoint`, resumes
    where a snapshot of a VM of the same config left off.
    """

    def __init__(self, config: BootConfig, console: Console, restore: RestorePoint | None = None) -> None:
        self._validate(config)
        self.config = config
        self.console = console
        self.stop = StopLatch()
        self.vcpus: list[VcpuFd] = []
        self.cpuid: list[CpuidRows] = []
        self.virtio: list[VirtioService] = []
        with contextlib.ExitStack() as undo:
            self._kvm = Kvm()
            undo.callback(self._kvm.close)
            self._vm: VmFd = self._kvm.create_vm()
            undo.callback(self._vm.close)
            ram = layout.ram_layout(config.memory_mib * MIB)
            self.memory = GuestMemory(ram, backing=None if restore is None else restore.memory_file)
            undo.callback(self.memory.close)
            self._create_platform()
            entry = self._load_guest() if restore is None else None
            self.pio = Bus()
            self.mmio = Bus()
            self._attach_devices()
            undo.callback(self._close_virtio)
            self._attach_virtio()
            undo.callback(self._close_vcpus)
            self._create_vcpus(entry)
            if restore is not None:
                self._restore(restore.state)
            self.pause = PauseGate(self.vcpus, self.stop)
            undo.pop_all()

    @staticmethod
    def _validate(config: BootConfig) -> None:
        if not 1 <= config.vcpus <= 254:
            raise ValueError(f"vcpus must be between 1 and 254, not {config.vcpus}")
        if config.memory_mib < MIN_MEMORY_MIB:
            raise ValueError(f"memory_mib must be at least {MIN_MEMORY_MIB}, not {config.memory_mib}")
        if len(config.cmdline) + 1 > layout.CMDLINE_MAX_SIZE:
            raise ValueError(f"kernel command line is {len(config.cmdline)} bytes; the limit is {layout.CMDLINE_MAX_SIZE - 1}")

    def _create_platform(self) -> None:
        vm = self._vm
        vm.set_identity_map_addr(layout.KVM_IDENTITY_MAP_ADDR)
        vm.set_tss_addr(layout.KVM_TSS_ADDR)
        vm.create_irqchip()
        vm.create_pit2()
        for slot, region in enumerate(self.memory.regions):
            vm.set_user_memory_region(slot, region.guest_phys_addr, region.size, self.memory.host_address(region))

    def _load_guest(self) -> int:
        """Place kernel, initramfs, command line and boot tables; return the kernel entry point."""
        memory, config = self.memory, self.config
        kernel = load_vmlinux(config.kernel, memory)
        initrd_addr, initrd_size = self._load_initramfs(kernel.end)
        cmdline = config.cmdline.encode() + b"\0"
        memory.write(layout.CMDLINE_ADDR, cmdline)
        contents = {**identity_page_tables(), **boot_memory_contents()}
        contents[layout.MPTABLE_ADDR] = mptable(layout.MPTABLE_ADDR, config.vcpus)
        ram = [(region.guest_phys_addr, region.size) for region in memory.regions]
        contents[layout.ZERO_PAGE_ADDR] = build_zero_page(
            cmdline_addr=layout.CMDLINE_ADDR,
            cmdline_size=len(cmdline) - 1,
            e820=e820_map(ram),
            initrd_addr=initrd_addr,
            initrd_size=initrd_size,
        )
        for gpa, data in contents.items():
            memory.write(gpa, data)
        return kernel.entry

    def _load_initramfs(self, kernel_end: int) -> tuple[int, int]:
        """Put the initramfs at the top of low RAM, page-aligned, clear of the kernel."""
        if self.config.initramfs is None:
            return 0, 0
        try:
            data = self.config.initramfs.read_bytes()
        except OSError as e:
            raise AssetError(f"cannot read initramfs {self.config.initramfs}: {e.strerror}") from None
        low_ram_end = self.memory.regions[0].end
        addr = (low_ram_end - len(data)) & ~(layout.PAGE_SIZE - 1)
        if addr < kernel_end:
            raise KernelImageError(
                f"kernel and a {len(data)}-byte initramfs do not fit in {self.config.memory_mib} MiB of RAM"
            )
        self.memory.write(addr, data)
        return addr, len(data)

    def _attach_devices(self) -> None:
        request = self.stop.request
        vm = self._vm

        def pulse_com1() -> None:
            vm.set_irq_line(COM1_IRQ, True)
            vm.set_irq_line(COM1_IRQ, False)

        self.uart = uart = Uart(output=self.console.feed, interrupt=pulse_com1)
        self._uart_lock = uart_lock = self.pio.register(COM1_BASE, UART_PORT_COUNT, uart)

        def type_into_console(data: bytes) -> int:
            with uart_lock:
                return uart.receive(data)

        self.console.attach_input(type_into_console)
        self.pio.register(I8042_DATA_PORT, I8042_PORT_COUNT, I8042(request))
        self.pio.register(EXIT_STATUS_PORT, EXIT_PORT_COUNT, ExitPorts(request))
        self.vector_states = VectorStatePorts(TaskVectorStates())
        self.pio.register(XSTATE_SAVE_PORT, XSTATE_PORT_RANGE, self.vector_states)

    def _attach_virtio(self) -> None:
        for index, device in enumerate(self.config.virtio_devices):
            self.virtio.append(VirtioService(self._vm, self.mmio, self.memory, device, MmioSlot.numbered(index)))

    def _close_virtio(self) -> None:
        for service in self.virtio:
            service.close()
        self.virtio.clear()

    def _create_vcpus(self, entry: int | None) -> None:
        """Create the vCPUs with this host's CPUID for the model; set boot state unless restoring."""
        if self.config.vcpus > self._kvm.max_vcpus:
            raise ValueError(f"this host's KVM allows at most {self._kvm.max_vcpus} vCPUs per VM")
        supported = self._kvm.supported_cpuid()
        for index in range(self.config.vcpus):
            vcpu = self._vm.create_vcpu(index)
            self.vcpus.append(vcpu)
            cpuid = tuple(guest_cpuid(supported, self.config.cpu_model, index, self.config.vcpus))
            self.cpuid.append(cpuid)
            vcpu.set_cpuid(list(cpuid))
            if entry is not None:
                setup_common_vcpu_state(vcpu)
                if index == 0:
                    setup_boot_vcpu(vcpu, entry)

    def _restore(self, state: MachineState) -> None:
        """Put back a snapshot's KVM and device state (memory is already the snapshot's).

        Raises :class:`SnapshotError` if KVM or a device refuses the saved state.
        """
        state = advanced(state, time.time_ns() - state.captured_at_ns)
        try:
            restore_vm(self._vm, state.vm)
            for vcpu, vcpu_state in zip(self.vcpus, state.vcpus, strict=True):
                restore_vcpu(vcpu, vcpu_state)
            for service, transport_state in zip(self.virtio, state.transports, strict=True):
                service.transport.restore(transport_state)
        except (OSError, ValueError, VirtqueueError) as error:
            raise SnapshotError("state", f"the saved VM state was refused: {error}") from error
        self.uart.restore(state.uart)
        self.vector_states.states = TaskVectorStates(state.task_vector_states)

    @contextlib.contextmanager
    def quiesced(self, idle_within: float = 0.0) -> Iterator[None]:
        """Hold the VM still: vCPUs parked out of ``KVM_RUN``, devices and UART locked. Blocking.

        With ``idle_within``, first wait up to that many seconds for a moment when
        every vCPU is halted (the guest has nothing to run), so what is captured
        resumes idle. Raises :class:`VmStopped` if the VM stops before it is paused.
        """
        deadline = time.monotonic() + idle_within
        self.pause.pause()
        try:
            while time.monotonic() < deadline and not self._all_halted():
                self.pause.resume()
                time.sleep(IDLE_POLL_INTERVAL)
                self.pause.pause()
            with contextlib.ExitStack() as locks:
                for lock in (self._uart_lock, *(service.lock for service in self.virtio)):
                    locks.enter_context(lock)
                yield
        finally:
            self.pause.resume()

    def _all_halted(self) -> bool:
        return all(
            int.from_bytes(get_state(vcpu.fd, StateKind.MP_STATE)[:4], "little") == lib.KVM_MP_STATE_HALTED
            for vcpu in self.vcpus
        )

    def capture(self) -> MachineState:
        """The state of the quiesced VM (inside :meth:`quiesced`), memory aside."""
        msr_indices = self._kvm.msr_index_list()
        return MachineState(
            vcpus=tuple(
                capture_vcpu(vcpu, cpuid, msr_indices) for vcpu, cpuid in zip(self.vcpus, self.cpuid, strict=True)
            ),
            vm=capture_vm(self._vm),
            transports=tuple(service.transport.save() for service in self.virtio),
            uart=self.uart.save(),
            captured_at_ns=time.time_ns(),
            tsc_khz=self.vcpus[0].tsc_khz(),
            task_vector_states=self.vector_states.states.state(),
        )

    def runners(self) -> list[VcpuRunner]:
        return [
            VcpuRunner(vcpu, pio=self.pio, mmio=self.mmio, memory=self.memory, stop=self.stop, pause=self.pause,
                       console_tail=self.console.tail)
            for vcpu in self.vcpus
        ]

    def _close_vcpus(self) -> None:
        for vcpu in self.vcpus:
            vcpu.close()
        self.vcpus.clear()

    def close(self) -> None:
        """Release every fd and mapping. Only once no vCPU thread runs."""
        self._close_vcpus()
        self._vm.close()
        self._close_virtio()  # after the VM: KVM drops its ioeventfd/irqfd references with it
        self._kvm.close()
        self.memory.close()
