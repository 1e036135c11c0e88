"""Build one VM from its recipe: KVM objects, memory, devices, vCPUs; then boot state or a snapshot's (blocking).

As Firecracker's ``builder.rs``: the same recipe feeds a boot and a restore, and
the running VM (:class:`MicroVm`) never builds.
"""

from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import dataclass
from pathlib import Path

from .._errors import AssetError, KernelImageError, SnapshotError, VirtqueueError
from .arch.x86_64 import layout
from .arch.x86_64.boot_params import build_zero_page, e820_map
from .arch.x86_64.cmdline import kernel_cmdline
from .arch.x86_64.cpu_state import boot_memory_contents, setup_boot_vcpu, setup_common_vcpu_state
from .arch.x86_64.cpuid import guest_cpuid
from .arch.x86_64.elf import load_vmlinux
from .arch.x86_64.mptable import mptable
from .arch.x86_64.paging import identity_page_tables
from .console import Console
from .device_manager import MmioDeviceManager
from .devices.bus import Bus
from .devices.shutdown_ports import EXIT_STATUS_PORT, I8042, I8042_DATA_PORT, ExitPorts
from .devices.uart import COM1_BASE, COM1_IRQ, UART_PORT_COUNT, Uart
from .devices.vector_state import XSTATE_PORT_RANGE, XSTATE_SAVE_PORT, TaskVectorStates, VectorStatePorts
from .init_config import InitConfig, initrd_with
from .kvm import Kvm
from .memory import GuestMemory
from .microvm import MIB, NET_ID, RNG_ID, VSOCK_ID, MicroVm, block_id
from .net.pump import RX_BACKLOG_BYTES, RX_BACKLOG_FRAMES, NetworkPump
from .persist import MachineState, advanced, restore_vcpu, restore_vm
from .recipe import VmRecipe
from .vcpu.stop import StopLatch
from .virtio.blk import Block
from .virtio.net import Net
from .virtio.rng import Rng
from .vsock.device import RX_QUEUE as VSOCK_RX_QUEUE
from .vsock.device import VsockDevice
from .vsock.host import MuxInbox, VsockHost
from .vsock.muxer import VsockMuxer

MIN_MEMORY_MIB = 64
MAX_VCPUS = 254
I8042_PORT_COUNT = 5
EXIT_PORT_COUNT = 2
ROOT_DEVICE = "/dev/vda"
# Every VM has its own vsock device, so all can use the first guest CID.
GUEST_CID = 3


@dataclass(frozen=True)
class RestorePoint:
    """Where a restored VM starts: its saved state and the file holding its memory."""

    state: MachineState
    memory_file: Path


def check_shape(recipe: VmRecipe) -> None:
    """Raise ``ValueError`` for a VM that cannot exist (before anything is allocated for it)."""
    if not 1 <= recipe.vcpus <= MAX_VCPUS:
        raise ValueError(f"vcpus must be between 1 and {MAX_VCPUS}, not {recipe.vcpus}")
    if recipe.memory_mib < MIN_MEMORY_MIB:
        raise ValueError(f"memory_mib must be at least {MIN_MEMORY_MIB}, not {recipe.memory_mib}")


def build(
    recipe: VmRecipe, console: Console, restore: RestorePoint | None, pump: NetworkPump | None = None,
    *, holder: str = "",
) -> MicroVm:
    """The VM ``recipe`` describes, booted from its kernel or resumed from ``restore``, ready to run.

    A recipe with a network needs ``pump``, the NIC's backend. ``holder`` (the VM's
    id) is recorded on the writable disks it attaches.

    Raises :class:`KernelImageError`, :class:`AssetError`, :class:`DiskError`,
    :class:`SnapshotError` (a saved state KVM refuses) or ``ValueError``.
    """
    check_shape(recipe)
    with contextlib.ExitStack() as undo:
        kvm = Kvm()
        undo.callback(kvm.close)
        if recipe.vcpus > kvm.max_vcpus:
            raise ValueError(f"this host's KVM allows at most {kvm.max_vcpus} vCPUs per VM")
        vm_fd = kvm.create_vm()
        undo.callback(vm_fd.close)
        memory = GuestMemory(
            layout.ram_layout(recipe.memory_mib * MIB), backing=None if restore is None else restore.memory_file
        )
        undo.callback(memory.close)
        microvm = MicroVm(recipe, kvm, vm_fd, memory, console, StopLatch(), Bus(), Bus())
        undo.callback(microvm.devices.close)
        _create_platform(microvm)
        _attach_platform_devices(microvm)
        inbox = MuxInbox()
        undo.callback(inbox.close)
        _register_virtio_devices(microvm, pump, inbox, holder)
        entry = None
        if restore is None:
            entry = _load_guest(microvm, kernel_cmdline_for(recipe, microvm.devices), init_config(recipe))
        undo.callback(microvm.close_vcpus)
        _create_vcpus(microvm, entry)
        if restore is not None:
            _restore(microvm, restore.state)
        undo.pop_all()
        return microvm


def _register_virtio_devices(microvm: MicroVm, pump: NetworkPump | None, inbox: MuxInbox, holder: str) -> None:
    """rng, vsock (its events to ``inbox``), the disks in order (the root first), the spare drives, and the NIC."""
    devices = microvm.devices
    devices.register(RNG_ID, Rng())
    muxer = VsockMuxer(GUEST_CID)
    microvm.vsock_device = VsockDevice(muxer, on_events=inbox.post)
    vsock = devices.register(VSOCK_ID, microvm.vsock_device)
    microvm.vsock = VsockHost(muxer, inbox, vsock.lock, functools.partial(vsock.kick, VSOCK_RX_QUEUE))
    disks = microvm.recipe.disks
    for index, disk in enumerate((*disks, *(None,) * microvm.recipe.spare_drives)):
        devices.register(block_id(index), Block(disk, holder))
    microvm.nic = _nic(microvm.recipe, pump)
    if microvm.nic is not None:
        devices.register(NET_ID, microvm.nic)


def _nic(recipe: VmRecipe, pump: NetworkPump | None) -> Net | None:
    """The recipe's NIC, its frames through ``pump``; None without a network."""
    if recipe.network is None:
        return None
    if pump is None:
        raise ValueError("a VM with a network needs a backend for its NIC")
    return Net(
        recipe.network.mac_bytes, pump.transmit, pump.transmit_room,
        mtu=recipe.network.mtu, rx_backlog_frames=RX_BACKLOG_FRAMES, rx_backlog_bytes=RX_BACKLOG_BYTES,
        backlog_room=pump.backlog_room,
    )


def kernel_cmdline_for(recipe: VmRecipe, devices: MmioDeviceManager) -> str:
    """The kernel's words for a boot of ``recipe`` with ``devices`` registered."""
    return kernel_cmdline(
        cpu_model=recipe.cpu_model,
        kernel_log=recipe.kernel_log,
        extra=recipe.cmdline_extra,
        devices=devices.kernel_arguments,
    )


def init_config(recipe: VmRecipe) -> InitConfig:
    """What init is told for a boot of ``recipe``."""
    return InitConfig(
        root=ROOT_DEVICE if recipe.disks else "",
        hostname=recipe.hostname,
        network="" if recipe.network is None else recipe.network.init_option,
        mounts=recipe.mounts,
        defaults=recipe.defaults,
        command=recipe.command,
    )


def _create_platform(microvm: MicroVm) -> None:
    fd = microvm.vm_fd
    fd.set_identity_map_addr(layout.KVM_IDENTITY_MAP_ADDR)
    fd.set_tss_addr(layout.KVM_TSS_ADDR)
    fd.create_irqchip()
    fd.create_pit2()
    for slot, region in enumerate(microvm.memory.regions):
        fd.set_user_memory_region(slot, region.guest_phys_addr, region.size, microvm.memory.host_address(region))


def _attach_platform_devices(microvm: MicroVm) -> None:
    request, fd = microvm.stop.request, microvm.vm_fd

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


def _load_guest(microvm: MicroVm, cmdline: str, config: InitConfig) -> int:
    """Place kernel, initramfs with init's configuration, command line and boot tables; return the entry point."""
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
    return kernel.entry


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


def _create_vcpus(microvm: MicroVm, entry: int | None) -> None:
    """Create the vCPUs with this host's CPUID for the model; set boot state unless restoring."""
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
        if entry is not None:
            setup_common_vcpu_state(vcpu)
            if index == 0:
                setup_boot_vcpu(vcpu, entry)
    microvm.arm_pause()


def _restore(microvm: MicroVm, state: MachineState) -> None:
    """Put back a snapshot's KVM and device state (memory is already the snapshot's).

    Raises :class:`SnapshotError` if KVM or a device refuses the saved state.
    """
    state = advanced(state, time.time_ns() - state.captured_at_ns)
    try:
        restore_vm(microvm.vm_fd, state.vm)
        for vcpu, vcpu_state in zip(microvm.vcpus, state.vcpus, strict=True):
            restore_vcpu(vcpu, vcpu_state)
        microvm.devices.restore(state.transports)
    except (OSError, ValueError, VirtqueueError) as error:
        raise SnapshotError("state", f"the saved VM state was refused: {error}") from error
    microvm.uart.restore(state.uart)
    microvm.vector_states.states = TaskVectorStates(state.task_vector_states)
