"""``Runtime``: owns machines (their threads, tasks and helpers) in one task group, with limits.

``async with Runtime() as rt: vm = await rt.start(...)`` gives handles any task on
the loop may use and close; leaving the block closes them all. Code that never
makes one gets a default runtime per event loop (:func:`default_runtime`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import secrets
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Unpack

import anyio
import anyio.abc
import sniffio

from . import _bake, _hooks, _paused
from ._core.arch.x86_64.cpuid import detect_cpu_model
from ._core.builder import RestorePoint, check_shape
from ._core.console import DEFAULT_CAPACITY
from ._core.microvm import block_device
from ._core.recipe import ProcessDefaults, VmRecipe
from ._core.running import running
from ._core.virtio.blk import Disk
from ._errors import CapacityExceeded, DiskError, MachineInUse, SnapshotError
from ._machine import Machine, Made
from ._network import MachineNetwork, NetworkOption, chosen_network
from ._options import BootOptions, RestoreOptions, StartOptions
from ._outcome import CloseReason
from ._paused import PausedMachine
from ._volume import DEFAULT_VOLUME_SLOTS, attachments, by_mount_point
from .guest import resolve_assets
from .image.image import Image
from .snapshot.snapshot import Snapshot

ID_BYTES = 4
logger = logging.getLogger("asupermachine")
_live: weakref.WeakSet[Runtime] = weakref.WeakSet()


class Runtime:
    """Owner of machines: every VM it starts runs in its task group until closed, timed out, or the block ends.

    ``max_machines`` and ``max_memory_mib`` bound what is alive at once; a start
    beyond them waits for room (or raises :class:`CapacityExceeded` with ``wait=False``).
    """

    def __init__(self, *, max_machines: int | None = None, max_memory_mib: int | None = None) -> None:
        self.max_machines = max_machines
        self.max_memory_mib = max_memory_mib
        self._machines: dict[str, Machine] = {}
        self._admitted = self._admitted_mib = 0
        self._capacity_changed = anyio.Event()
        self._closing = False
        self._exit = contextlib.AsyncExitStack()
        self._tasks: anyio.abc.TaskGroup | None = None

    async def __aenter__(self) -> Runtime:
        self._tasks = await self._exit.enter_async_context(anyio.create_task_group())
        _live.add(self)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> bool | None:
        self._closing = True
        for machine in list(self._machines.values()):
            machine._request_close(CloseReason.RUNTIME)
        try:
            return await self._exit.__aexit__(kind, error, traceback)
        finally:
            _live.discard(self)

    def machines(self) -> list[Machine]:
        """The machines alive now, oldest first."""
        return list(self._machines.values())

    def get(self, machine_id: str) -> Machine:
        """The live machine with ``id``; raises ``KeyError`` if there is none."""
        return self._machines[machine_id]

    # -- starting ----------------------------------------------------------------

    async def start(self, image: Image | str | None = None, **options: Unpack[StartOptions]) -> Machine:
        """Start an image (an :class:`Image`, a reference found locally or pulled, None: the built-in one).

        The image's root filesystem becomes the guest's root. Without ``command`` or
        ``run`` the machine is a sandbox for :meth:`Machine.exec`, whose processes get
        the image's env, working directory and user unless told otherwise.
        ``command`` runs ``entrypoint + command`` as the main process (docker's CMD
        override), ``run=True`` the image's own entrypoint and cmd; the machine ends
        with it and :meth:`Machine.wait` returns its exit code. See
        :class:`StartOptions` for the rest. Raises :class:`ImageError` and what
        :meth:`boot` raises.
        """
        chosen = (
            image if isinstance(image, Image) else await Image.resolve(image, insecure=options.get("insecure", False))
        )
        config = chosen.config
        command = options.get("command")
        main: Sequence[str] = ()
        if command is not None:
            main = (*config.entrypoint, *command)
        elif options.get("run", False):
            main = config.args
            if not main:
                raise ValueError(f"image {chosen.name} has no entrypoint or cmd to run")
        boot: BootOptions = {key: value for key, value in options.items() if key not in ("run", "insecure")}  # type: ignore[assignment]
        boot["command"] = main
        boot["env"] = {**config.env, **(options.get("env") or {})}
        boot["workdir"] = options.get("workdir") or config.workdir
        boot["user"] = options.get("user") or config.user
        boot["root"] = Disk(await chosen.root_disk())
        boot["network"] = options.get("network", True)
        boot["volume_slots"] = options.get("volume_slots", DEFAULT_VOLUME_SLOTS)
        return await self.boot(**boot)

    async def boot(self, kernel: str | os.PathLike[str] | None = None, **options: Unpack[BootOptions]) -> Machine:
        """Boot the project's kernel and init (or ``kernel``/``initramfs``) with no image.

        The root is ``root`` (default: the project's busybox root). The guest's init
        starts the agent (for :meth:`Machine.exec` and friends) and runs ``command``,
        ending the machine with its exit code; without one the machine serves until
        it is closed. Raises :class:`KVMUnavailable` without usable KVM,
        :class:`KernelImageError` for a bad kernel, :class:`AssetError` when the
        default assets cannot be built, :class:`DiskError` for an unusable disk
        or a volume another machine has (a writable one: any other; a read-only
        one: one that writes it), ``ValueError`` for an impossible shape (vCPUs,
        memory, command) or a bad volume mount point.
        """
        root = options.get("root")
        initramfs = options.get("initramfs")
        assets = await anyio.to_thread.run_sync(
            lambda: resolve_assets(
                None if kernel is None else Path(kernel),
                None if initramfs is None else Path(initramfs),
                default_root=root is None,
            )
        )
        network = chosen_network(options.get("network", False))
        machine_id = self._new_id()
        if root is None:
            assert assets.default_root is not None, "asked for above"
            root = Disk(assets.default_root)
        changes = options.get("changes")
        disks = (root, *options.get("disks", ()), *([changes] if changes is not None else []))
        volumes = options.get("volumes", {})
        volume_disks, mounts = attachments(volumes, len(disks))
        for volume in volumes.values():
            await anyio.to_thread.run_sync(_paused.check_unclaimed, volume.path)
            await volume.settle()
        recipe = VmRecipe(
            kernel=assets.kernel,
            initramfs=assets.initramfs,
            disks=(*disks, *volume_disks),
            spare_drives=options.get("volume_slots", 0),
            mounts=mounts,
            changes_device=block_device(len(disks) - 1) if changes is not None else "",
            cpu_model=detect_cpu_model(),
            vcpus=options.get("vcpus", 1),
            memory_mib=options.get("memory_mib", 256),
            command=tuple(options.get("command") or ()),
            defaults=ProcessDefaults(
                env=dict(options.get("env") or {}), workdir=options.get("workdir", ""), user=options.get("user", "")
            ),
            hostname=machine_id,
            network=None if network is None else network.guest(),
            kernel_log=options.get("kernel_log", False),
            cmdline_extra=options.get("cmdline_extra", ""),
        )
        return await self._launch(machine_id, recipe, None, options, Made(network, dict(volumes)))

    async def restore(self, snapshot: Snapshot | str | os.PathLike[str], **options: Unpack[RestoreOptions]) -> Machine:
        """Resume a machine from ``snapshot`` (a :class:`Snapshot` or its directory, then loaded first).

        The guest carries on where the snapshot was taken: its processes, files and
        memory are as they were. Its vsock connections are reset (the agent keeps
        listening, so :meth:`Machine.exec` works at once). Memory is mapped
        copy-on-write from the snapshot's file, so machines restored from one
        snapshot share the pages none of them has written. ``volumes`` go into the
        snapshot's empty drives and are mounted before the machine is returned. Raises
        :class:`SnapshotError` for a snapshot that fails a check, and :class:`DiskError`
        for a volume that cannot be mounted (in use, or no empty drive left).
        """
        if not isinstance(snapshot, Snapshot):
            snapshot = await anyio.to_thread.run_sync(Snapshot.load, snapshot)
        if snapshot.kept_disks:
            raise SnapshotError("paused", f"{snapshot.path} is a paused machine's: resume it by its id")
        return await self._restored(snapshot, self._new_id(), options, Made())

    async def resume(self, machine_id: str, **options: Unpack[RestoreOptions]) -> Machine:
        """Bring back the machine :meth:`Machine.pause` saved as ``machine_id``, in this process or another.

        It carries on as it was: the same id and hostname, its processes, files,
        volumes and network (published ports bound again), with the rest of its
        timeout unless ``timeout`` is given. Pause it again to keep it; closing it
        (or its timeout, or its runtime's end) ends it, and its pause is removed.

        :raises PausedMachineNotFound: if no machine was paused as ``machine_id``
        :raises MachineInUse: if it is resumed already (here or in another process)
        :raises SnapshotError: if its pause is damaged, or a disk it kept was changed
            since; the pause is left as it is
        """
        if machine_id in self._machines:
            raise MachineInUse(f"machine {machine_id} runs in this runtime")
        claim = await anyio.to_thread.run_sync(_paused.Resumption.claim, machine_id)
        try:
            record = await anyio.to_thread.run_sync(_paused.load, machine_id)
            snapshot = await anyio.to_thread.run_sync(record.snapshot)
            chosen: RestoreOptions = {"timeout": record.timeout, "network": record.network or False, **options}
            return await self._restored(snapshot, machine_id, chosen, Made(volumes=record.volumes), resumption=claim)
        except BaseException:
            claim.release()
            raise

    async def paused(self) -> list[PausedMachine]:
        """Every paused machine of this user (not only this runtime's), the oldest pause first."""
        return await anyio.to_thread.run_sync(_paused.listed)

    async def remove_paused(self, machine_id: str) -> None:
        """Delete a paused machine and what it saved (its volumes stay, free for others).

        :raises PausedMachineNotFound: if there is none; :class:`MachineInUse` while it is resumed.
        """
        await anyio.to_thread.run_sync(_paused.remove, machine_id)

    async def _restored(
        self, snapshot: Snapshot, machine_id: str, options: RestoreOptions, made: Made,
        resumption: _paused.Resumption | None = None,
    ) -> Machine:
        recipe = snapshot.recipe
        network = chosen_network(options.get("network", recipe.network is not None))
        if recipe.network is None and network is not None:
            raise ValueError(f"snapshot {snapshot.path} has no NIC: bake it with a network to restore one")
        if recipe.network is not None:
            if network is None:
                raise ValueError(f"snapshot {snapshot.path} has a NIC, so its machines have a network (network=False)")
            network.check_restorable(recipe.network)
        made = dataclasses.replace(made, network=network)  # what the machine runs with, to keep at a pause
        volumes = by_mount_point(options.get("volumes", {}))
        if len(volumes) > recipe.spare_drives:
            raise DiskError(
                f"snapshot {snapshot.path} has {recipe.spare_drives} empty drives for {len(volumes)} volumes:"
                " make its machine with more volume_slots"
            )
        machine = await self._launch(machine_id, recipe, snapshot.restore_point(), options, made, resumption)
        try:
            for target, volume in volumes.items():
                await machine.mount(volume, target)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await machine.close()
            raise
        return machine

    async def bake(
        self,
        image: Image,
        *,
        warmup: Sequence[str] = (),
        wait_for_port: int | None = None,
        vcpus: int = 1,
        memory_mib: int = 256,
        network: NetworkOption = True,
        volume_slots: int = DEFAULT_VOLUME_SLOTS,
    ) -> Snapshot:
        """The snapshot of ``image`` booted and ready, from the cache or made now on this runtime.

        ``warmup`` runs to completion (it must exit 0, else :class:`WarmupFailed`)
        before the snapshot, so what it does (imports, caches) is done in every
        restored machine; ``wait_for_port`` waits until something in the guest
        accepts vsock connections there. ``network`` is as for :meth:`start` (only its
        guest side, DNS and MTU, is kept: restores choose their own ports), and so is
        ``volume_slots`` (restores mount their ``volumes`` there). The cache key covers
        the image, the guest assets and these options.
        """
        options = _bake.BakeOptions(
            tuple(warmup), wait_for_port, vcpus, memory_mib, chosen_network(network), volume_slots
        )
        return await _bake.bake(self, image, options)

    # -- running -----------------------------------------------------------------

    def _new_id(self) -> str:
        while (machine_id := secrets.token_hex(ID_BYTES)) in self._machines or _paused.exists(machine_id):
            pass
        return machine_id

    async def _launch(
        self, machine_id: str, recipe: VmRecipe, restore: RestorePoint | None, options: RestoreOptions, made: Made,
        resumption: _paused.Resumption | None = None,
    ) -> Machine:
        if self._tasks is None or self._closing:
            raise RuntimeError("this runtime is not running: use it inside 'async with Runtime() as rt'")
        check_shape(recipe)
        await self._admit(recipe.memory_mib, options.get("wait", True))
        try:
            machine: Machine = await self._tasks.start(
                self._serve, machine_id, recipe, restore, options.get("console_capacity", DEFAULT_CAPACITY),
                options.get("timeout"), made, resumption, name=f"machine-{machine_id}",
            )
        except BaseException:
            self._release(recipe.memory_mib)
            raise
        return machine

    async def _serve(
        self, machine_id: str, recipe: VmRecipe, restore: RestorePoint | None, console_capacity: int,
        timeout: float | None, made: Made, resumption: _paused.Resumption | None, *,
        task_status: anyio.abc.TaskStatus[Machine],
    ) -> None:
        """Run one machine until it is closed, times out or its guest stops; never disturb the others.

        A machine ``resumption`` brought back from a pause keeps it until it ends: paused
        again, its new pause stays; ended otherwise, its pause goes.
        """
        machine: Machine | None = None
        reason = CloseReason.STOPPED
        network = made.network
        passt = egress = None
        if network is not None and recipe.network is not None:
            passt, egress = network.passt(recipe.network), network.egress(recipe.network)
        try:
            async with running(recipe, console_capacity, restore, passt, egress, holder=machine_id) as engine:
                info = None if passt is None or recipe.network is None else MachineNetwork.of(recipe.network, passt)
                machine = Machine._create(
                    engine, machine_id, rename_guest=restore is not None and resumption is None, network=info,
                    made_with=made,
                )
                self._machines[machine_id] = machine
                if self._closing:
                    machine._request_close(CloseReason.RUNTIME)
                task_status.started(machine)
                reason = await machine._serve(timeout)
                if reason in (CloseReason.CLOSED, CloseReason.TIMEOUT, CloseReason.RUNTIME) and machine.running:
                    with anyio.CancelScope(shield=True):
                        await machine._sync_volumes()
        except Exception:
            if machine is None:
                raise  # the caller of start() gets it
            logger.exception("machine %s failed; it is closed", machine_id)
        finally:
            if machine is not None:
                self._machines.pop(machine_id, None)
                self._release(recipe.memory_mib)
                if resumption is not None:
                    with anyio.CancelScope(shield=True):
                        await anyio.to_thread.run_sync(
                            functools.partial(resumption.end, paused=reason is CloseReason.PAUSED)
                        )
                machine._mark_closed(reason)

    async def _admit(self, memory_mib: int, wait: bool) -> None:
        if self.max_memory_mib is not None and memory_mib > self.max_memory_mib:
            raise CapacityExceeded(
                f"a {memory_mib} MiB machine exceeds this runtime's max_memory_mib={self.max_memory_mib}"
            )
        while not self._fits(memory_mib):
            if not wait:
                raise CapacityExceeded(
                    f"this runtime holds {self._admitted} machines, {self._admitted_mib} MiB "
                    f"(max_machines={self.max_machines}, max_memory_mib={self.max_memory_mib})"
                )
            await self._capacity_changed.wait()
        self._admitted += 1
        self._admitted_mib += memory_mib

    def _fits(self, memory_mib: int) -> bool:
        machines_ok = self.max_machines is None or self._admitted < self.max_machines
        memory_ok = self.max_memory_mib is None or self._admitted_mib + memory_mib <= self.max_memory_mib
        return machines_ok and memory_ok

    def _release(self, memory_mib: int) -> None:
        self._admitted -= 1
        self._admitted_mib -= memory_mib
        self._capacity_changed.set()
        self._capacity_changed = anyio.Event()


# -- the default runtime, one per event loop ----------------------------------------


class _DefaultRuntime:
    def __init__(self) -> None:
        self.runtime = Runtime()
        self.ready = anyio.Event()
        self.task: Any = None  # asyncio: the hosting task, kept referenced


_defaults: dict[object, _DefaultRuntime] = {}


async def default_runtime() -> Runtime:
    """This event loop's default runtime, started on first use as a background (system) task.

    It closes its machines when the loop ends (``asyncio.run`` and ``trio.run``
    cancel it) or the interpreter exits.
    """
    library = sniffio.current_async_library()
    if library == "trio":
        import trio

        key: object = trio.lowlevel.current_trio_token()
    else:
        key = asyncio.get_running_loop()
    entry = _defaults.get(key)
    if entry is None:
        entry = _defaults[key] = _DefaultRuntime()
        if library == "trio":
            trio.lowlevel.spawn_system_task(_host, key, entry, name="asupermachine-default-runtime")
        else:
            entry.task = asyncio.get_running_loop().create_task(_host(key, entry), name="asupermachine-default-runtime")
    await entry.ready.wait()
    return entry.runtime


async def _host(key: object, entry: _DefaultRuntime) -> None:
    try:
        async with entry.runtime:
            entry.ready.set()
            await anyio.sleep_forever()
    finally:
        _defaults.pop(key, None)


def _stop_everything() -> None:
    """At interpreter exit, before Python waits for its threads, end what still runs.

    A default runtime whose asyncio loop was left paused (a notebook kernel's: it
    stops its loop without ending its tasks) is ended on that loop, closing its
    machines: until its task ends, the worker threads anyio started for it stay,
    and Python would wait for them forever. Other guests are halted (vCPU threads
    are daemons; this is the clean way).
    """
    for key, entry in list(_defaults.items()):
        if isinstance(key, asyncio.AbstractEventLoop) and not (key.is_running() or key.is_closed()):
            entry.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                key.run_until_complete(entry.task)
    for runtime in list(_live):
        for machine in runtime.machines():
            machine._halt()


threading._register_atexit(_stop_everything)  # type: ignore[attr-defined]
_hooks.register_default_runtime(default_runtime)

