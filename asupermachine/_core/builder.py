"""Build one VM from its recipe: KVM objects, memory, devices, vCPUs; then boot state or a snapshot's (blocking).

As Firecracker's ``builder.rs``: the same recipe feeds a boot and a restore, and
the running VM (:class:`MicroVm`) never builds.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from pathlib import Path

from .._errors import SnapshotError, VirtqueueError
from .console import Console
from .devices.bus import Bus
from .init_config import InitConfig
from .kvm import Kvm
from .memory import GuestMemory
from .microvm import MIB, NET_ID, RNG_ID, VSOCK_ID, MicroVm, block_id
from .net.pump import RX_BACKLOG_BYTES, RX_BACKLOG_FRAMES, NetworkPump
from .persist import MachineState
from .platform import host_platform
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
        platform = host_platform()
        memory = GuestMemory(
            platform.ram_layout(recipe.memory_mib * MIB), backing=None if restore is None else restore.memory_file
        )
        undo.callback(memory.close)
        microvm = MicroVm(recipe, kvm, vm_fd, memory, console, StopLatch(), Bus(), Bus(), platform)
        undo.callback(microvm.devices.close)
        undo.callback(platform.close)
        platform.create(microvm)
        undo.callback(microvm.close_vcpus)
        platform.create_vcpus(microvm)  # before the devices: arm64's vGIC takes irqfds only once initialized
        inbox = MuxInbox()
        undo.callback(inbox.close)
        _register_virtio_devices(microvm, pump, inbox, holder)
        if restore is None:
            platform.boot(microvm, platform.cmdline(recipe, microvm.devices), init_config(recipe))
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


def init_config(recipe: VmRecipe) -> InitConfig:
    """What init is told for a boot of ``recipe``."""
    return InitConfig(
        root=ROOT_DEVICE if recipe.disks else "",
        hostname=recipe.hostname,
        network="" if recipe.network is None else recipe.network.init_option,
        mounts=recipe.mounts,
        changes=recipe.changes_device,
        defaults=recipe.defaults,
        command=recipe.command,
    )


def _restore(microvm: MicroVm, state: MachineState) -> None:
    """Put back a snapshot's KVM and device state (memory is already the snapshot's).

    Raises :class:`SnapshotError` if KVM or a device refuses the saved state.
    """
    try:
        microvm.platform.restore(microvm, state)
        microvm.devices.restore(state.transports)
    except (OSError, ValueError, VirtqueueError) as error:
        raise SnapshotError("state", f"the saved VM state was refused: {error}") from error
    microvm.uart.restore(state.uart)
