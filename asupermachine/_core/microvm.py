"""One built VM's KVM side while it runs: vCPU run loops, pausing, state capture, release (no async).

:func:`builder.build` makes it; nothing here assembles.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

from .._errors import DiskError
from .._outcome import GuestExit, ShutdownReason
from .console import Console
from .device_manager import MmioDeviceManager
from .devices.bus import Bus
from .devices.uart import Uart
from .devices.vector_state import VectorStatePorts
from .kvm import Kvm, VcpuFd, VmFd
from .kvm.stats import KvmStats, StatsFormatError, summed
from .memory import GuestMemory
from .persist import CpuidRows, MachineState
from .platform import Platform
from .recipe import VmRecipe
from .vcpu.pause import PauseGate
from .vcpu.runner import VcpuRunner
from .vcpu.stop import StopLatch
from .virtio.blk import Block, Disk
from .virtio.net import Net
from .vsock.device import VsockDevice
from .vsock.host import VsockHost

MIB = 1 << 20
IDLE_POLL_INTERVAL = 0.005
# The ids the VM's virtio devices are registered and saved under.
RNG_ID, VSOCK_ID, NET_ID = "rng", "vsock", "net0"


def block_id(index: int) -> str:
    """The id of the ``index``-th disk (``/dev/vda`` is 0)."""
    return f"blk{index}"


def block_device(index: int) -> str:
    """The guest's name of the ``index``-th disk: ``/dev/vda``... ``/dev/vdz``, ``/dev/vdaa``... as Linux names them."""
    letters = ""
    index += 1
    while index:
        index, letter = divmod(index - 1, 26)
        letters = chr(ord("a") + letter) + letters
    return f"/dev/vd{letters}"


class MicroVm:
    """A VM's KVM objects, memory, buses and devices. Run each of :meth:`runners` on its own thread."""

    # Set by the builder once the device exists.
    uart: Uart
    uart_lock: threading.Lock
    vector_states: VectorStatePorts
    vsock: VsockHost
    vsock_device: VsockDevice
    nic: Net | None
    pause: PauseGate

    def __init__(
        self, recipe: VmRecipe, kvm: Kvm, vm_fd: VmFd, memory: GuestMemory, console: Console, stop: StopLatch,
        pio: Bus, mmio: Bus, platform: Platform,
    ) -> None:
        self.recipe = recipe
        self.kvm = kvm
        self.vm_fd = vm_fd
        self.memory = memory
        self.console = console
        self.stop = stop
        self.pio = pio
        self.mmio = mmio
        self.platform = platform
        self.vcpus: list[VcpuFd] = []
        self.cpuid: list[CpuidRows] = []
        self.devices = MmioDeviceManager(vm_fd, mmio, memory, platform.virtio_slots)
        self._stats: list[KvmStats] = []  # closed with the vCPUs

    def watch_stats(self, fd: int) -> None:
        """Count KVM's statistics of the VM or a vCPU ``fd`` into :meth:`kvm_stats` (for a vCPU: before it runs).

        A kernel without them (before Linux 5.14), or with a block this reader does not
        understand, only leaves the counts out: statistics never stop a VM from being made.
        """
        with contextlib.suppress(OSError, StatsFormatError):
            self._stats.append(KvmStats(fd))

    def arm_pause(self) -> None:
        self.pause = PauseGate(self.vcpus, self.stop)

    @contextlib.contextmanager
    def quiesced(self, idle_within: float = 0.0) -> Iterator[None]:
        """Hold the VM still: vCPUs parked out of ``KVM_RUN``, devices and UART locked. Blocking.

        With ``idle_within``, first wait up to that many seconds for a moment when
        the guest is idle (every vCPU waits for an interrupt), so what is captured
        resumes idle. Raises :class:`VmStopped` if the VM stops before it is paused.
        """
        deadline = time.monotonic() + idle_within
        self.pause.pause()
        try:
            ran_ns = 0
            while time.monotonic() < deadline and not self.platform.idle(self, ran_ns):
                self.pause.resume()
                resumed = time.monotonic_ns()
                time.sleep(IDLE_POLL_INTERVAL)
                ran_ns = time.monotonic_ns() - resumed
                self.pause.pause()
            with contextlib.ExitStack() as locks:
                for lock in (self.uart_lock, *(service.lock for _, service in self.devices)):
                    locks.enter_context(lock)
                yield
        finally:
            self.pause.resume()

    def capture(self) -> MachineState:
        """The state of the quiesced VM (inside :meth:`quiesced`), memory aside."""
        return self.platform.capture(self)

    def retire(self) -> None:
        """Stop the quiesced VM for good (inside :meth:`quiesced`): no vCPU runs again and no device serves
        another request, so what was captured is the VM's last state, disks included."""
        for _, service in self.devices:
            service.retire()
        self.stop.request(GuestExit(ShutdownReason.HOST))

    def fill_spare_drive(self, disk: Disk, holder: str) -> int:
        """Put ``disk`` in the first empty drive and tell the guest; returns its index as a disk.

        Raises :class:`DiskError` if no drive is empty or ``disk`` cannot be used.
        """
        recipe = self.recipe
        if recipe.spare_drives == 0:
            raise DiskError("this machine has no empty drive left for a volume (see the volume_slots option)")
        index = len(recipe.disks)
        service = self.devices[block_id(index)]
        with service.lock:
            cast(Block, service.transport.device).insert(disk, holder)
            service.transport.config_changed()
        self.recipe = dataclasses.replace(recipe, disks=(*recipe.disks, disk), spare_drives=recipe.spare_drives - 1)
        return index

    def freeze_disk(self, index: int, target: Path) -> None:
        """Write disk ``index`` as the guest sees it to the new file ``target``, synced (inside :meth:`quiesced`)."""
        block = cast(Block, self.devices[block_id(index)].transport.device)
        with target.open("xb") as file:
            block.freeze(file.fileno())
            os.fsync(file.fileno())

    def kvm_stats(self) -> dict[str, int]:
        """KVM's cumulative counters of this VM, its vCPUs' added up (``exits``, ``io_exits``, ``mmio_exits``...)."""
        return summed(stats.read() for stats in self._stats)

    def runners(self) -> list[VcpuRunner]:
        return [
            VcpuRunner(vcpu, pio=self.pio, mmio=self.mmio, memory=self.memory, stop=self.stop, pause=self.pause,
                       console_tail=self.console.tail, platform=self.platform)
            for vcpu in self.vcpus
        ]

    def close_vcpus(self) -> None:
        for vcpu in self.vcpus:
            vcpu.close()
        self.vcpus.clear()
        for stats in self._stats:
            stats.close()
        self._stats.clear()

    def close(self) -> None:
        """Release every fd and mapping. Only once no vCPU thread runs."""
        self.close_vcpus()
        self.platform.close()  # arm64's vGIC device fd
        self.vm_fd.close()
        self.devices.close()  # after the VM: KVM drops its ioeventfd/irqfd references with it
        self.vsock.close()
        self.kvm.close()
        self.memory.close()
