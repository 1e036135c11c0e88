"""One VM while it runs: its vCPU threads and device tasks in one task group, and how it ended."""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.abc

from .._errors import AsupermachineError, GuestError, GuestStopped, GuestUnresponsive, NetBackendError, SnapshotError
from .._groups import unwrap_single_error
from .._outcome import GuestExit, ShutdownReason
from ..snapshot.memory_file import MemoryImage, write_memory
from ..snapshot.snapshot import Snapshot, write_snapshot
from .builder import RestorePoint, build
from .console import Console
from .eventfd import EventFd
from .microvm import NET_ID, VSOCK_ID, MicroVm, block_device
from .net.announce import gratuitous_arp
from .net.egress import EgressFilter
from .net.passt import Passt, PasstLink, running_passt
from .net.pump import NetworkPump
from .persist import MachineState
from .recipe import VmRecipe
from .vcpu.pause import VmStopped
from .vcpu.runner import VcpuRunner
from .virtio.blk import Disk
from .vsock.device import EVENT_QUEUE
from .vsock.host import VsockListener, VsockStream

# How long a call waits for the guest (its agent, a port); a boot under software KVM takes ~30 s.
GUEST_DEADLINE = 180.0
# How often the devices' interrupts are checked for one the guest never took (see VirtioService).
LOST_INTERRUPT_CHECK_INTERVAL = 1.0
KERNEL_PANIC_MARKER = "Kernel panic - not syncing"
CONSOLE_LINES_SHOWN = 8  # of a guest that does not answer, in the error

T = TypeVar("T")
logger = logging.getLogger("asupermachine")


class RunningVm:
    """A built VM served by tasks in ``tasks``; :attr:`stopped` is set once every vCPU has ended."""

    def __init__(
        self, microvm: MicroVm, tasks: anyio.abc.TaskGroup, pump: NetworkPump | None = None, *, holder: str = ""
    ) -> None:
        self.microvm = microvm
        self._holder = holder
        self.vsock = microvm.vsock
        self.tasks = tasks
        self._pump = pump
        self.stopped = GuestStop()
        self._vcpus_running = len(microvm.vcpus)

    @property
    def console(self) -> Console:
        return self.microvm.console

    @property
    def recipe(self) -> VmRecipe:
        return self.microvm.recipe

    @property
    def memory_mib(self) -> int:
        return self.recipe.memory_mib

    async def connect(self, port: int) -> VsockStream:
        return await self.vsock.connect(port)

    def listen(self, port: int) -> contextlib.AbstractAsyncContextManager[VsockListener]:
        return self.vsock.listen(port)

    def kvm_stats(self) -> dict[str, int]:
        return self.microvm.kvm_stats()

    async def attach_disk(self, disk: Disk) -> str:
        """Put ``disk`` in the VM's first empty drive; the guest's name of it (see :meth:`MicroVm.fill_spare_drive`)."""
        index = await anyio.to_thread.run_sync(self.microvm.fill_spare_drive, disk, self._holder)
        return block_device(index)

    def halt(self) -> None:
        """Stop the guest at once, from any thread; the VM's task group then frees it."""
        self.microvm.stop.request(GuestExit(ShutdownReason.HOST))

    def host_stopped(self) -> bool:
        """Whether the guest is running or was stopped by the host, not ended by itself."""
        stop = self.microvm.stop
        return stop.failure is None and (stop.result is None or stop.result.reason is ShutdownReason.HOST)

    async def snapshot(
        self, path: Path, idle_within: float, *, then_stop: Callable[[Snapshot], None] | None = None
    ) -> Snapshot:
        """Save the VM into the new directory ``path`` (see :meth:`Machine.snapshot`).

        With ``then_stop`` (a pause) the VM is held still from the capture until
        ``then_stop(snapshot)`` has returned, and then never runs again: its writable
        disks stay where they are, in the state the snapshot expects. If anything
        fails before that, the VM runs on as if nothing had happened.
        """
        microvm = self.microvm

        def capture(memory_path: Path, frozen: Mapping[int, Path]) -> tuple[MachineState, MemoryImage]:
            state = microvm.capture()
            for index, target in frozen.items():
                microvm.freeze_disk(index, target)
            with microvm.memory.whole as memory:
                return state, write_memory(memory, memory_path)

        def held_for_capture(memory_path: Path, frozen: Mapping[int, Path]) -> tuple[MachineState, MemoryImage]:
            with microvm.quiesced(idle_within):
                return capture(memory_path, frozen)

        def write() -> Snapshot:
            if then_stop is None:
                return write_snapshot(path, self.recipe, held_for_capture)
            with microvm.quiesced(idle_within):  # held through the whole write, then stopped for good
                snapshot = write_snapshot(path, self.recipe, capture, keep_writable=True)
                then_stop(snapshot)
                microvm.retire()
                return snapshot

        try:
            return await anyio.to_thread.run_sync(write)
        except VmStopped:
            raise SnapshotError("running", "the VM stopped before it could be snapshotted") from None

    @property
    def network_failure(self) -> NetBackendError | None:
        """Why the VM's network stopped; None while it serves, or with no network."""
        return None if self._pump is None else self._pump.failure

    @property
    def egress(self) -> EgressFilter | None:
        """The filter the guest's frames pass; None with no network."""
        return None if self._pump is None else self._pump.egress

    def start(self) -> None:
        self.tasks.start_soon(self.vsock.run, name="vsock-events")
        self.tasks.start_soon(self._raise_lost_interrupts_again, name="lost-interrupts")
        for device_id, service in self.microvm.devices:
            self.tasks.start_soon(service.run, name=f"virtio-{device_id}")
        for index, runner in enumerate(self.microvm.runners()):
            self.tasks.start_soon(self._run_vcpu, runner, index, name=f"vcpu-{index}")

    async def _raise_lost_interrupts_again(self) -> None:
        while True:
            await anyio.sleep(LOST_INTERRUPT_CHECK_INTERVAL)
            for device_id, service in self.microvm.devices:
                if service.raise_again_if_unacknowledged():
                    logger.debug("virtio-%s's interrupt was not taken within %s s: raised again",
                                 device_id, LOST_INTERRUPT_CHECK_INTERVAL)

    async def _run_vcpu(self, runner: VcpuRunner, index: int) -> None:
        """Run one vCPU on its own (daemon) thread; return only once that thread has ended."""
        done = EventFd()

        def loop() -> None:
            try:
                runner.run()
            except BaseException:
                pass  # recorded in the stop latch, which result() reports
            finally:
                done.signal()

        thread = threading.Thread(target=loop, name=f"asupermachine-vcpu-{index}", daemon=True)
        thread.start()
        ended = False
        try:
            await done.wait()
            ended = True
        finally:
            with anyio.CancelScope(shield=True):
                self.microvm.stop.request(GuestExit(ShutdownReason.HOST))  # no-op once stopped
                if not ended:
                    await done.wait()
                # Only returning is left to the thread once it has signalled; waiting on
                # is_alive() instead could miss that and wait for a signal that never comes.
                thread.join()
                done.close()
                self._vcpus_running -= 1
                if self._vcpus_running == 0:
                    self.console.close()
                    self.stopped.set()

    def result(self) -> GuestExit:
        """How the guest ended (call once :attr:`stopped`); raises :class:`GuestError` if a vCPU failed."""
        stop = self.microvm.stop
        if stop.failure is not None:
            if isinstance(stop.failure, AsupermachineError):
                raise stop.failure
            raise GuestError(f"vCPU thread failed: {stop.failure!r}") from stop.failure
        result = stop.result
        assert result is not None, "vCPUs stop only through the latch"
        if result.reason is ShutdownReason.RESET and KERNEL_PANIC_MARKER in self.console.tail():
            return GuestExit(ShutdownReason.PANIC)
        return result

    def stopped_error(self) -> AsupermachineError:
        """What a call on the stopped guest raises: its vCPU's :class:`GuestError`, or :class:`GuestStopped`."""
        try:
            exit = self.result()
        except AsupermachineError as error:
            return error
        return GuestStopped(f"the guest stopped ({_describe(exit)})", exit, self.console.tail())

    async def until_guest(self, step: Callable[[], Awaitable[T]], what: str) -> T:
        """Await ``step`` unless the guest stops first or it takes longer than :data:`GUEST_DEADLINE`."""
        try:
            return await self.stopped.until(step, what, self.stopped_error)
        except GuestUnresponsive as error:
            last_lines = "\n".join(self.console.tail().splitlines()[-CONSOLE_LINES_SHOWN:])
            raise GuestUnresponsive(f"{error}; the console's last lines:\n{last_lines}") from None


class GuestStop:
    """Set once the guest has stopped; what waits on the guest through :meth:`until` is cut short then.

    One cancel scope per wait, cancelled by :meth:`set`, rather than a task racing
    each wait: an exec waits on the guest once, and its host time is measured in
    tens of microseconds.
    """

    def __init__(self) -> None:
        self._event = anyio.Event()
        self._waits: set[anyio.CancelScope] = set()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        await self._event.wait()

    def set(self) -> None:
        self._event.set()
        for scope in self._waits:
            scope.cancel()

    async def until(self, step: Callable[[], Awaitable[T]], what: str, stopped_error: Callable[[], Exception]) -> T:
        """Await ``step`` unless the guest stops first (``stopped_error()`` is raised) or it takes longer
        than :data:`GUEST_DEADLINE` (:class:`GuestUnresponsive`, saying the guest has not ``what``)."""
        if not self.is_set():
            with anyio.move_on_after(GUEST_DEADLINE) as scope:
                self._waits.add(scope)
                try:
                    return await step()
                finally:
                    self._waits.discard(scope)
            if not self.is_set():
                raise GuestUnresponsive(f"the guest has not {what} within {GUEST_DEADLINE:.0f} s")
        raise stopped_error()


def _describe(exit: GuestExit) -> str:
    return exit.reason.value + (f" {exit.exit_code}" if exit.exit_code is not None else "")


@contextlib.asynccontextmanager
async def running(
    recipe: VmRecipe,
    console_capacity: int,
    restore: RestorePoint | None,
    passt: Passt | None = None,
    egress: EgressFilter | None = None,
    *,
    holder: str = "",
) -> AsyncIterator[RunningVm]:
    """Build the VM and run it for the block; leaving stops it and frees every thread, fd, mapping and helper.

    A recipe with a network needs ``passt``, how its passt is to serve it (one
    is started for the VM and killed when it ends), and ``egress``, the filter its
    frames pass. ``holder`` (the VM's id) is recorded on the writable disks it attaches.
    """
    if not (recipe.network is None) == (passt is None) == (egress is None):
        raise ValueError("passt options and an egress filter go with a network, and only with one")
    console = Console(console_capacity)
    pump = None
    if recipe.network is not None and egress is not None:
        pump = NetworkPump(gratuitous_arp(recipe.network.mac_bytes, recipe.network.ip), egress)
    built: list[MicroVm] = []
    try:
        # Appending inside the thread means a cancellation during assembly still
        # leaves us holding the VM, so the finally below can free it.
        await anyio.to_thread.run_sync(lambda: built.append(build(recipe, console, restore, pump, holder=holder)))
        microvm = built[0]
        vsock_reset = anyio.Event()
        if restore is not None:
            # The guest's connections were to a host side that is gone.
            microvm.devices[VSOCK_ID].work_on(
                lambda: microvm.vsock_device.post_transport_reset(vsock_reset.set), EVENT_QUEUE
            )
        with unwrap_single_error():
            async with anyio.create_task_group() as tasks:
                engine = RunningVm(microvm, tasks, pump, holder=holder)
                engine.start()
                # passt starts while the guest runs: a process start is the slowest step of a
                # restore, and the guest's frames wait for it in the pump's outbox. The VM is
                # ready without it unless its start can fail through the caller (see _serve_network).
                network_up = anyio.Event()
                awaited = passt is not None and passt.start_may_fail
                if pump is not None and passt is not None and microvm.nic is not None:
                    served = functools.partial(pump.run, service=microvm.devices[NET_ID], device=microvm.nic)
                    tasks.start_soon(_serve_network, passt, pump, served, network_up, awaited, name="network")
                if not awaited:
                    network_up.set()
                try:
                    if restore is not None:
                        await engine.until_guest(vsock_reset.wait, "taken in the vsock reset")
                    await network_up.wait()  # a passt that cannot start fails the task group instead
                    yield engine
                finally:
                    microvm.stop.request(GuestExit(ShutdownReason.HOST))
                    # Device tasks serve until the VM goes; vCPU threads end once kicked.
                    tasks.cancel_scope.cancel()
    finally:
        # In a worker thread: KVM tears a VM down as its fd closes, which takes milliseconds
        # (22 ms under kvm_pvm) that the event loop, serving other VMs, need not wait.
        with anyio.CancelScope(shield=True):
            for microvm in built:
                await anyio.to_thread.run_sync(microvm.close)
        if pump is not None:
            pump.close()
        await console.release()


async def _serve_network(
    passt: Passt, pump: NetworkPump, serve: Callable[[PasstLink], Awaitable[None]], up: anyio.Event, awaited: bool
) -> None:
    """Run the VM's passt and ``serve`` frames between it and the NIC until cancelled (passt dies with it).

    A passt that cannot start fails the VM if its start is ``awaited`` (a host port
    may be taken, or passt was never seen to start here). A VM handed out without
    waiting takes such a failure as if passt had died: the pump keeps it.
    """
    try:
        async with running_passt(passt) as link:
            up.set()
            await serve(link)
    except NetBackendError as error:
        if awaited:
            raise
        pump.fail(error)
