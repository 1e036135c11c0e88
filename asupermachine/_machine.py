"""``Machine``: one microVM's lifecycle under anyio, its vCPU threads and tasks in one task group."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio

from ._errors import AsupermachineError, GuestError
from ._core.arch.x86_64.cmdline import InitOptions, kernel_cmdline
from ._core.arch.x86_64.cpuid import detect_cpu_model
from ._core.console import DEFAULT_CAPACITY, Console
from ._core.devices.shutdown_ports import GuestExit, ShutdownReason
from ._groups import unwrap_single_error
from .guest import resolve_assets
from .image.image import Image
from ._core.microvm import BootConfig, MicroVm, RestorePoint
from ._core.recipe import ExecDefaults, VmRecipe
from .snapshot.errors import SnapshotError
from .snapshot.snapshot import Snapshot, write_snapshot
from ._core.vcpu.pause import VmStopped
from ._core.agent import files
from ._core.agent.exec import ExecResult, ExecTimeout, collect
from ._core.agent.process import Process, greet
from ._core.agent.protocol import AGENT_PORT, VectorState
from ._core.virtio.blk import Block, Disk
from ._core.virtio.mmio import VirtioDevice
from ._core.virtio.rng import Rng
from ._core.virtio.service import MmioSlot
from ._core.vsock.device import EVENT_QUEUE, RX_QUEUE, VsockDevice
from ._core.vsock.host import VsockConnectionReset, VsockHost, VsockListener, VsockStream
from ._core.vsock.muxer import VsockMuxer

# Every VM has its own vsock device, so all can use the first guest CID.
GUEST_CID = 3
# rng and vsock come first; the root disk is the first virtio-blk device after them.
FIXED_DEVICES = 2
ROOT_DEVICE = "/dev/vda"
# How long exec waits for the agent to listen; a boot under software KVM takes ~30 s.
AGENT_DEADLINE = 180.0
AGENT_RETRY_INTERVAL = 0.05

KERNEL_PANIC_MARKER = "Kernel panic - not syncing"

T = TypeVar("T")


class Machine:
    """A running microVM. Get one from :meth:`boot` (an async context manager)."""

    def __init__(self, microvm: MicroVm, vsock: VsockHost, recipe: VmRecipe) -> None:
        self._microvm = microvm
        self._vsock = vsock
        self._recipe = recipe
        self._limiter = anyio.CapacityLimiter(len(microvm.vcpus))
        self._vcpus_running = len(microvm.vcpus)
        self._stopped = anyio.Event()

    @property
    def console(self) -> Console:
        """The serial console: ``async for chunk in vm.console``, ``vm.console.lines()``, ``send()``."""
        return self._microvm.console

    @classmethod
    @contextlib.asynccontextmanager
    async def boot(
        cls,
        kernel: str | os.PathLike[str] | None = None,
        *,
        initramfs: str | os.PathLike[str] | None = None,
        command: Sequence[str] = (),
        cmdline_extra: str = "",
        vcpus: int = 1,
        memory_mib: int = 256,
        kernel_log: bool = False,
        console_capacity: int = DEFAULT_CAPACITY,
        root: Disk | None = None,
        disks: Sequence[Disk] = (),
        env: Mapping[str, str] | None = None,
        workdir: str = "",
        user: str = "",
        exec_defaults: ExecDefaults | None = None,
    ) -> AsyncIterator[Machine]:
        """Boot the project's kernel and init (or ``kernel``/``initramfs``) and run ``command`` in it.

        The guest's root filesystem is ``root`` (read-only erofs or ext4, under a
        writable in-memory overlay), by default the project's busybox root. The
        guest's init prints a ready line, starts the agent (for :meth:`exec` and
        friends), runs ``command`` with ``env``, ``workdir`` and ``user`` (name, uid,
        ``user:group`` or ``uid:gid``) and ends the VM with its exit status, which
        :meth:`wait` returns; without a command the VM runs until the block is left.
        Console output not yet read is kept up to ``console_capacity`` bytes, then
        the oldest is dropped. The root is ``/dev/vda``; ``disks`` become ``/dev/vdb``,
        ``/dev/vdc``, ... in order (virtio-blk). ``exec_defaults`` are what
        :meth:`exec` and :meth:`spawn` start from (an image's env, workdir, user).
        Leaving the block (normally, by an error or by cancellation) stops the VM
        and frees every thread, fd and mapping it held.

        Raises :class:`KVMUnavailable` without usable KVM, :class:`KernelImageError`
        for a bad kernel, :class:`AssetError` when the default assets cannot be
        built, :class:`DiskError` for an unusable disk image, ``ValueError`` for an impossible shape (vCPUs, memory, command), and
        :class:`GuestError` when a vCPU fails (emulation failure, bad state).
        """
        assets = await anyio.to_thread.run_sync(
            resolve_assets, _optional_path(kernel), _optional_path(initramfs)
        )
        cpu_model = detect_cpu_model()
        all_disks = (root or Disk(assets.default_root), *disks)
        recipe = VmRecipe(
            kernel=assets.kernel,
            initramfs=assets.initramfs,
            disks=all_disks,
            cmdline=kernel_cmdline(
                cpu_model=cpu_model,
                kernel_log=kernel_log,
                extra=cmdline_extra,
                devices=[MmioSlot.numbered(index).kernel_argument for index in range(FIXED_DEVICES + len(all_disks))],
                init=InitOptions(root=ROOT_DEVICE, env=env or {}, workdir=workdir, user=user),
                command=command,
            ),
            vcpus=vcpus,
            memory_mib=memory_mib,
            cpu_model=cpu_model,
            exec_defaults=exec_defaults or ExecDefaults(),
        )
        async with cls._launch(recipe, console_capacity) as machine:
            yield machine

    @classmethod
    @contextlib.asynccontextmanager
    async def restore(
        cls, snapshot: Snapshot | str | os.PathLike[str], *, console_capacity: int = DEFAULT_CAPACITY
    ) -> AsyncIterator[Machine]:
        """Resume a VM from ``snapshot`` (a :class:`Snapshot` or its directory, then loaded first).

        The guest carries on where the snapshot was taken: its processes, files
        and memory are as they were. Its vsock connections are reset (the agent
        keeps listening, so :meth:`exec` works at once). Memory is mapped
        copy-on-write from the snapshot's file, so VMs restored from one snapshot
        share the pages none of them has written. Raises :class:`SnapshotError`
        for a snapshot that fails a check.
        """
        if not isinstance(snapshot, Snapshot):
            snapshot = await anyio.to_thread.run_sync(Snapshot.load, snapshot)
        async with cls._launch(snapshot.manifest.recipe, console_capacity, snapshot.restore_point()) as machine:
            yield machine

    @classmethod
    @contextlib.asynccontextmanager
    async def _launch(
        cls, recipe: VmRecipe, console_capacity: int, restore: RestorePoint | None = None
    ) -> AsyncIterator[Machine]:
        console = Console(console_capacity)
        vsock = VsockHost(VsockMuxer(GUEST_CID))
        blocks: list[Block] = []
        built: list[MicroVm] = []
        try:
            for disk in recipe.disks:
                blocks.append(Block(disk))
            vsock_device = VsockDevice(vsock.muxer, on_events=vsock.post)
            devices: tuple[VirtioDevice, ...] = (Rng(), vsock_device, *blocks)
            config = BootConfig(
                kernel=recipe.kernel,
                initramfs=recipe.initramfs,
                cmdline=recipe.cmdline,
                vcpus=recipe.vcpus,
                memory_mib=recipe.memory_mib,
                cpu_model=recipe.cpu_model,
                virtio_devices=devices,
            )
            # Appending inside the thread means a cancellation during assembly still
            # leaves us holding the VM, so the finally below can free it.
            await anyio.to_thread.run_sync(lambda: built.append(MicroVm(config, console, restore)))
            (vsock_service,) = [s for s in built[0].virtio if s.transport.device is vsock_device]
            vsock.attach(vsock_service.lock, lambda: vsock_service.kick(RX_QUEUE))
            vsock_reset = anyio.Event()
            if restore is not None:
                # The guest's connections were to a host side that is gone.
                vsock_service.serve(lambda: vsock_device.post_transport_reset(vsock_reset.set), EVENT_QUEUE)
            machine = cls(built[0], vsock, recipe)
            with unwrap_single_error():
                async with anyio.create_task_group() as tasks:
                    machine._start(tasks)
                    try:
                        if restore is not None:
                            await machine._until_guest(vsock_reset.wait, "took in the vsock reset")
                        yield machine
                    finally:
                        machine._microvm.stop.request(GuestExit(ShutdownReason.HOST))
                        # Device tasks serve until the VM goes; vCPU threads end once kicked.
                        tasks.cancel_scope.cancel()
        finally:
            for microvm in built:
                microvm.close()
            for block in blocks:
                block.close()
            vsock.close()
            await console.release()

    @classmethod
    @contextlib.asynccontextmanager
    async def start(
        cls,
        image: Image | str | None = None,
        *,
        command: Sequence[str] | None = None,
        run: bool = False,
        env: Mapping[str, str] | None = None,
        workdir: str = "",
        user: str = "",
        insecure: bool = False,
        **boot_options: Any,
    ) -> AsyncIterator[Machine]:
        """Boot an image (an :class:`Image`, a reference to find locally or pull, or the built-in one).

        The image's root filesystem becomes the guest's root. Without ``command``
        or ``run`` the VM is a sandbox for :meth:`exec`, whose processes get the
        image's env, working directory and user unless told otherwise. ``command``
        runs ``entrypoint + command`` as the VM's main process (docker's CMD
        override), ``run=True`` the image's own entrypoint and cmd; :meth:`wait`
        returns its exit status and :attr:`console` streams its output. Other
        options are :meth:`boot`'s.
        """
        chosen = image if isinstance(image, Image) else await Image.resolve(image, insecure=insecure)
        config = chosen.config
        defaults = ExecDefaults(
            env={**config.env, **(env or {})}, cwd=workdir or config.working_dir, user=user or config.user
        )
        main: Sequence[str] = ()
        if command is not None:
            main = (*config.entrypoint, *command)
        elif run:
            main = config.command
            if not main:
                raise ValueError(f"image {chosen.name} has no entrypoint or cmd to run")
        root = Disk(await chosen.root_disk())
        async with cls.boot(
            root=root, command=main, env=defaults.env, workdir=defaults.cwd, user=defaults.user,
            exec_defaults=defaults, **boot_options,
        ) as machine:
            yield machine

    def _start(self, tasks: anyio.abc.TaskGroup) -> None:
        self._tasks = tasks
        tasks.start_soon(self._vsock.run, name="vsock-events")
        for service in self._microvm.virtio:
            tasks.start_soon(service.run, name=f"virtio@{service.slot.base:#x}")
        for index, runner in enumerate(self._microvm.runners()):
            tasks.start_soon(self._run_vcpu, runner.run, name=f"vcpu-{index}")

    async def _run_vcpu(self, run: Callable[[], None]) -> None:
        try:
            await anyio.to_thread.run_sync(run, limiter=self._limiter)
        finally:
            self._vcpus_running -= 1
            if self._vcpus_running == 0:
                self._microvm.console.close()
                self._stopped.set()

    async def connect(self, port: int) -> VsockStream:
        """An anyio byte stream to the guest's vsock ``port`` (the host is CID 2, the guest CID 3).

        Raises :class:`VsockConnectionReset` when the guest refuses (nothing listens there).
        """
        return await self._vsock.connect(port)

    def listen(self, port: int) -> contextlib.AbstractAsyncContextManager[VsockListener]:
        """Accept guest connections to the host (CID 2) ``port``: ``async with vm.listen(port) as listener``.

        ``await listener.accept()`` gives each connection as a byte stream. Raises
        ``OSError`` (EADDRINUSE) if the port is already listened on.
        """
        return self._vsock.listen(port)

    async def spawn(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str = "",
        user: str | int = "",
    ) -> Process:
        """Start ``argv`` in the guest; returns a :class:`Process` with streamed stdio.

        ``env`` adds to a default ``PATH`` (and ``HOME``, from the user's passwd entry);
        ``cwd`` empty means ``/``; ``user`` is a name, uid, ``user:group`` or ``uid:gid``
        resolved against the guest's ``/etc/passwd`` and ``/etc/group`` (empty: root).
        Waits for the agent if the guest is still booting. Raises :class:`ExecError` if
        the command cannot start. Use the process with ``async with``: leaving kills it.
        """
        defaults = self._recipe.exec_defaults
        env = {**defaults.env, **(env or {})}
        cwd, user = cwd or defaults.cwd, str(user) or defaults.user
        connection = await self._connect_agent()
        try:
            process, decoder = await Process.start(connection, argv, env=env, cwd=cwd, user=user)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await connection.aclose()
            raise
        self._tasks.start_soon(process.pump, decoder, name=f"process-{process.pid}")
        return process

    async def exec(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str = "",
        user: str | int = "",
        stdin: bytes | None = None,
        timeout: float | None = None,
    ) -> ExecResult:
        """Run ``argv`` to completion and collect its output (see :meth:`spawn`).

        Raises :class:`ExecTimeout`, after killing the command, if it outlives
        ``timeout`` seconds.
        """
        process = await self.spawn(argv, env=env, cwd=cwd, user=user)
        try:
            async with process:
                with anyio.fail_after(timeout):
                    return await collect(process, stdin)
        except TimeoutError:
            raise ExecTimeout(f"{argv[0]!r} ran longer than {timeout} s and was killed") from None

    async def write_file(self, path: str, data: bytes, *, mode: int = 0o644) -> None:
        """Create or replace the guest file ``path`` with ``data`` and permission bits ``mode``.

        Raises :class:`GuestFileError` (with ``errno``) when the guest cannot write it.
        """
        async with await self._connect_agent() as connection:
            await files.write_file(connection, path, data, mode)

    async def read_file(self, path: str) -> bytes:
        """The content of the guest file ``path``; :class:`GuestFileError` if it cannot be read."""
        async with await self._connect_agent() as connection:
            return await files.read_file(connection, path)

    async def vector_state(self) -> VectorState:
        """Whether guest processes keep their own AVX registers, as init found at boot.

        ``LEAKS`` (software KVM without the VMM's help, e.g. another VMM on our kernel)
        means the guest runs glibc, Go and OpenBLAS AVX-free, and other code that
        uses AVX may see another process's register contents. Waits for the agent.
        """
        async with await self._connect_agent() as connection:
            hello, _ = await greet(connection)
        return hello.vector_state

    async def _connect_agent(self) -> VsockStream:
        async def connect() -> VsockStream:
            while True:
                try:
                    return await self.connect(AGENT_PORT)
                except VsockConnectionReset:
                    await anyio.sleep(AGENT_RETRY_INTERVAL)  # the agent is not listening yet

        return await self._until_guest(connect, "agent listened")

    async def _until_guest(self, step: Callable[[], Awaitable[T]], what: str) -> T:
        """Await ``step`` unless the guest stops first or it takes longer than :data:`AGENT_DEADLINE`."""
        outcome: list[T] = []
        with unwrap_single_error():
            async with anyio.create_task_group() as race:
                async def run_step() -> None:
                    outcome.append(await step())
                    race.cancel_scope.cancel()

                race.start_soon(run_step)
                with anyio.move_on_after(AGENT_DEADLINE) as deadline:
                    await self._stopped.wait()
                race.cancel_scope.cancel()
        if outcome:
            return outcome[0]
        if deadline.cancelled_caught:
            raise GuestError(f"the guest has not {what} within {AGENT_DEADLINE:.0f} s")
        raise GuestError(f"the guest stopped ({self._result()}) before it {what}")

    async def snapshot(self, path: str | os.PathLike[str], *, idle_within: float = 0.0) -> Snapshot:
        """Save this VM into the new directory ``path``; it runs on afterwards.

        The guest is held still while its state and memory are written (a
        fraction of a second for a small guest), then continues. With
        ``idle_within``, the snapshot waits up to that many seconds for a moment
        when the guest has nothing to run (say, still tearing down a finished
        process), so that restores resume an idle guest and answer at once.
        Restore with :meth:`restore`. Raises :class:`SnapshotError` for a VM
        with a writable disk or one that stopped, ``FileExistsError`` if
        ``path`` exists.
        """
        try:
            return await anyio.to_thread.run_sync(
                write_snapshot, self._microvm, self._recipe, Path(path), idle_within
            )
        except VmStopped:
            raise SnapshotError("running", "the VM stopped before it could be snapshotted") from None

    async def wait(self) -> GuestExit:
        """Wait for the guest to stop; returns why, with the exit status when init reported one.

        Raises :class:`GuestError` if a vCPU failed (for example an emulation failure).
        """
        await self._stopped.wait()
        return self._result()

    @property
    def running(self) -> bool:
        """Whether the guest still runs (no vCPU has stopped)."""
        return not self._stopped.is_set()

    @property
    def exit(self) -> GuestExit | None:
        """How the guest ended, or None while it runs; raises :class:`GuestError` like :meth:`wait`."""
        return self._result() if self._stopped.is_set() else None

    def _result(self) -> GuestExit:
        stop = self._microvm.stop
        if stop.failure is not None:
            if isinstance(stop.failure, AsupermachineError):
                raise stop.failure
            raise GuestError(f"vCPU thread failed: {stop.failure!r}") from stop.failure
        result = stop.result
        assert result is not None, "vCPUs stop only through the latch"
        if result.reason is ShutdownReason.RESET and KERNEL_PANIC_MARKER in self.console.tail():
            return GuestExit(ShutdownReason.PANIC)
        return result


def _optional_path(value: str | os.PathLike[str] | None) -> Path | None:
    return None if value is None else Path(value)
