"""``Machine``: the handle to one running microVM, usable from any task on its event loop."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Literal, TypeVar, Unpack, overload

import anyio
import anyio.abc

from . import _paused
from ._backend import Backend
from ._construction import NoPublicConstructor
from ._core.agent import files, trees
from ._core.agent.exec import execute
from ._core.agent.files import GuestFileReader, GuestFileWriter
from ._core.agent.process import Process, greet
from ._core.agent.protocol import (
    AGENT_PORT,
    AttachRequest,
    CommandRequest,
    GuestProcess,
    LayerRequest,
    ListRequest,
    MountRequest,
    ProcessRequest,
    SyncRequest,
    TreeRequest,
    VectorState,
    decode_process_list,
    encode_hostname,
)
from ._core.console import Console
from ._core.net.egress import EgressPolicy
from ._core.recipe import GuestMount
from ._core.vsock.host import VsockListener
from ._errors import AsupermachineError, DiskError, ExecTimeout, MachineClosed, NetBackendError, VsockConnectionReset
from ._hooks import default_runtime
from ._network import MachineNetwork, Network
from ._options import RESTORE_KEYS, BootOptions, RestoreOptions, StartOptions
from ._outcome import CloseReason, ExecResult, GuestExit
from ._paused import PausedMachine
from ._tree.extract import TreeExtractor, download_target
from ._volume import Volume, mount_point
from .image.image import Image
from .snapshot.snapshot import Snapshot, is_snapshot

AGENT_RETRY_INTERVAL = 0.05
SYNC_SECONDS = 10.0
"""How long a closing or pausing machine waits for its guest to sync its writable volumes."""
PORT_POLL_INTERVAL = 0.05

T = TypeVar("T")
logger = logging.getLogger("asupermachine")


@dataclass(frozen=True)
class Made:
    """What a machine was made with that its pause keeps for its resume."""

    network: Network | None = None
    volumes: Mapping[str, Volume] = field(default_factory=dict)


class Machine(metaclass=NoPublicConstructor):
    """A running microVM. Get one from a :class:`Runtime` or :meth:`create`; close it with :meth:`close`.

    Any task on the event loop that made it may use it and close it. Calls on a
    closed machine raise :class:`MachineClosed`; calls on a guest that stopped by
    itself raise :class:`GuestStopped` (or the :class:`GuestError` that stopped it).
    """

    def __init__(
        self, backend: Backend, machine_id: str, *, rename_guest: bool, network: MachineNetwork | None = None,
        made_with: Made = Made(),
    ) -> None:
        self._backend = backend
        self.id = machine_id
        """Short and unique among live and paused machines; also the guest's hostname."""
        self._network = network
        self._made_with = made_with
        self._rename_guest = rename_guest
        self._close_requested = anyio.Event()
        self._closed = anyio.Event()
        self._close_reason: CloseReason | None = None
        self._life = anyio.CancelScope()
        self._calls: set[anyio.CancelScope] = set()
        self._drives = anyio.Lock()
        """Held while a volume goes into a drive, and while the machine is saved: a save sees each drive
        either empty or mounted."""

    @property
    def network(self) -> MachineNetwork | None:
        """The guest's address, where it reaches the host, the published ports and whether the network
        still serves (:attr:`MachineNetwork.failure`); None without a NIC."""
        if self._network is None:
            return None
        return self._network.now(self._backend.egress, self._backend.network_failure)

    def set_egress(self, *, allow_out: Sequence[str] = (), deny_out: Sequence[str] = ()) -> None:
        """Change where the guest may connect (as :attr:`Network.allow_out` and :attr:`Network.deny_out`
        say), from its next connection on: connections already open stay. Raises ``ValueError`` for a
        bad entry and :class:`NetBackendError` for a machine without a network."""
        policy = EgressPolicy.of(allow_out, deny_out)
        egress = self._backend.egress
        if egress is None:
            raise NetBackendError(f"machine {self.id} has no network to set an egress policy on")
        egress.policy = policy

    def __repr__(self) -> str:
        state = "closed" if self.closed else "running" if self.running else "stopped"
        return f"<Machine {self.id} {state}>"

    # -- creating ----------------------------------------------------------------

    @classmethod
    async def create(
        cls, source: Image | Snapshot | str | os.PathLike[str] | None = None, **options: Unpack[StartOptions]
    ) -> Machine:
        """A machine on this event loop's default runtime: restored from a :class:`Snapshot` (or the
        path of one), else started from an image (an :class:`Image`, a reference, None: the built-in one).

        It lives until :meth:`close`, its ``timeout``, or the event loop's end; see
        :meth:`Runtime.start` for the options.
        """
        runtime = await default_runtime()
        if isinstance(source, (Snapshot, str, os.PathLike)) and (isinstance(source, Snapshot) or is_snapshot(source)):
            restore_options: RestoreOptions = {
                key: value for key, value in options.items() if key in RESTORE_KEYS
            }  # type: ignore[assignment]
            return await runtime.restore(source, **restore_options)
        image = os.fspath(source) if isinstance(source, os.PathLike) else source
        return await runtime.start(image, **options)

    @classmethod
    @contextlib.asynccontextmanager
    async def boot(
        cls, kernel: str | os.PathLike[str] | None = None, **options: Unpack[BootOptions]
    ) -> AsyncIterator[Machine]:
        """Boot the project's kernel and init (or ``kernel``) for the block: :meth:`Runtime.boot`."""
        async with await (await default_runtime()).boot(kernel, **options) as machine:
            yield machine

    @classmethod
    @contextlib.asynccontextmanager
    async def start(cls, image: Image | str | None = None, **options: Unpack[StartOptions]) -> AsyncIterator[Machine]:
        """Start an image for the block: :meth:`Runtime.start` on the default runtime."""
        async with await (await default_runtime()).start(image, **options) as machine:
            yield machine

    @classmethod
    @contextlib.asynccontextmanager
    async def restore(
        cls, snapshot: Snapshot | str | os.PathLike[str], **options: Unpack[RestoreOptions]
    ) -> AsyncIterator[Machine]:
        """Resume a snapshot for the block: :meth:`Runtime.restore` on the default runtime."""
        async with await (await default_runtime()).restore(snapshot, **options) as machine:
            yield machine

    @classmethod
    @contextlib.asynccontextmanager
    async def resume(cls, machine_id: str, **options: Unpack[RestoreOptions]) -> AsyncIterator[Machine]:
        """Bring back a paused machine for the block: :meth:`Runtime.resume` on the default runtime.

        Leaving the block ends it unless it was paused again in it (:meth:`pause`).
        """
        async with await (await default_runtime()).resume(machine_id, **options) as machine:
            yield machine

    # -- lifetime ------------------------------------------------------------------

    async def _serve(self, timeout: float | None) -> CloseReason:
        """Keep the VM until it is closed, times out or its guest stops (the runtime's task); returns why."""
        if timeout is not None:
            self._life.deadline = anyio.current_time() + timeout
        with self._life:
            async with anyio.create_task_group() as race:

                async def until(happened: Callable[[], Awaitable[None]]) -> None:
                    await happened()
                    race.cancel_scope.cancel()

                race.start_soon(until, self._close_requested.wait)
                race.start_soon(until, self._backend.stopped.wait)
        if self._life.cancelled_caught and self._close_reason is None:
            self._close_reason = CloseReason.TIMEOUT
        for call in self._calls:
            call.cancel()
        return self._close_reason or CloseReason.STOPPED

    def _mark_closed(self, reason: CloseReason) -> None:
        """The runtime has freed the VM (``reason`` unless one was already given)."""
        self._close_reason = self._close_reason or reason
        self._closed.set()

    def _request_close(self, reason: CloseReason) -> None:
        self._close_reason = self._close_reason or reason
        self._close_requested.set()

    def _halt(self) -> None:
        """Stop the guest at once, from any thread (interpreter exit); the runtime then frees it."""
        self._backend.halt()

    async def close(self) -> None:
        """Stop the guest and free everything it held; returns once that is done. Idempotent."""
        self._request_close(CloseReason.CLOSED)
        await self._until_freed()

    async def __aenter__(self) -> Machine:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()

    async def set_timeout(self, seconds: float | None) -> None:
        """Close the machine ``seconds`` from now (None: never), replacing any earlier timeout."""
        self._check_usable()
        self._life.deadline = float("inf") if seconds is None else anyio.current_time() + seconds

    @property
    def closed(self) -> bool:
        """Whether the machine is closed and its resources freed (by :meth:`close`, timeout or its runtime)."""
        return self._closed.is_set()

    @property
    def close_reason(self) -> CloseReason | None:
        """Why the machine closed; None while it is open."""
        return self._close_reason if self.closed else None

    @property
    def memory_mib(self) -> int:
        return self._backend.memory_mib

    def kvm_stats(self) -> dict[str, int]:
        """KVM's own counters of this VM so far, its vCPUs' added up, by KVM's names.

        Among them ``exits`` (every VM exit), ``io_exits`` and ``mmio_exits`` (those
        the VMM served), ``halt_exits``, ``irq_injections``, ``irq_window_exits``.
        For profiling: what a workload costs in exits, and where. Raises
        :class:`MachineClosed` once the machine is closed, and the guest's error
        (:class:`GuestStopped`...) once it has stopped.
        """
        self._check_usable()
        return self._backend.kvm_stats()

    @property
    def console(self) -> Console:
        """The serial console: ``async for chunk in vm.console``, ``vm.console.lines()``, ``send()``."""
        return self._backend.console

    async def wait(self) -> GuestExit:
        """Wait for the guest to stop; returns why, with the exit code when init reported one.

        Raises :class:`GuestError` if a vCPU failed (for example an emulation failure).
        """
        await self._backend.stopped.wait()
        return self._backend.result()

    @property
    def running(self) -> bool:
        """Whether the guest still runs (no vCPU has stopped)."""
        return not self._backend.stopped.is_set()

    @property
    def exit(self) -> GuestExit | None:
        """How the guest ended, or None while it runs; raises :class:`GuestError` like :meth:`wait`."""
        return self._backend.result() if self._backend.stopped.is_set() else None

    # -- using ---------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._close_reason not in (None, CloseReason.STOPPED) and self._backend.host_stopped():
            raise MachineClosed(self.id, self._close_reason)
        if self._backend.stopped.is_set():
            raise self._backend.stopped_error()

    async def _guarded(self, step: Callable[[], Awaitable[T]]) -> T:
        """Run a call on the guest: refused once closed or stopped, cut short (with that error) when it happens.

        A call refused or cut short because the machine is closing raises once it is
        closed: whoever sees the error then finds it gone from its runtime.
        """
        if self._close_reason is not None:
            await self._until_freed()
        self._check_usable()
        with anyio.CancelScope() as scope:
            self._calls.add(scope)
            try:
                return await step()
            finally:
                self._calls.discard(scope)
        await self._until_freed()  # only the machine's end cancels this scope
        self._check_usable()
        raise MachineClosed(self.id, self._close_reason or CloseReason.CLOSED)

    async def _until_freed(self) -> None:
        """Wait, even when cancelled, for the runtime to free the machine (its teardown is bounded)."""
        with anyio.CancelScope(shield=True):
            await self._closed.wait()

    def _lost(self) -> AsupermachineError:
        try:
            self._check_usable()
        except AsupermachineError as error:
            return error
        return MachineClosed(self.id, CloseReason.CLOSED)

    async def connect(self, port: int) -> anyio.abc.ByteStream:
        """An anyio byte stream to the guest's vsock ``port`` (the host is CID 2, the guest CID 3).

        Raises :class:`VsockConnectionReset` when the guest refuses (nothing listens there).
        """
        return await self._guarded(lambda: self._backend.connect(port))

    def listen(self, port: int) -> contextlib.AbstractAsyncContextManager[VsockListener]:
        """Accept guest connections to the host (CID 2) ``port``: ``async with vm.listen(port) as listener``.

        ``await listener.accept()`` gives each connection as a byte stream. Raises
        ``OSError`` (EADDRINUSE) if the port is already listened on.
        """
        self._check_usable()
        return self._backend.listen(port)

    async def spawn(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        workdir: str = "",
        user: str | int = "",
        tty: bool = False,
        size: tuple[int, int] = (24, 80),
    ) -> Process:
        """Start ``argv`` in the guest; returns a :class:`Process` with streamed stdio.

        ``tty=True`` runs it on a terminal (a pty in the guest, its controlling
        terminal, in a new session) of ``size`` (rows, columns), as ``docker run -t``;
        see :class:`Process` for how its streams then behave.

        ``env`` adds to the image's environment and a default ``PATH`` (and ``HOME``,
        from the user's passwd entry); ``workdir`` empty means the image's (else ``/``);
        ``user`` is a name, uid, ``user:group`` or ``uid:gid`` resolved against the
        guest's ``/etc/passwd`` and ``/etc/group`` (empty: the image's, else root).
        Waits for the agent if the guest is still booting. Raises :class:`ExecError`
        if the command cannot start. Use the process with ``async with``: leaving kills it.
        """
        request = CommandRequest(tuple(argv), dict(env or {}), workdir, str(user), size if tty else None)
        return await self._guarded(lambda: self._start_process(request))

    async def attach(self, pid: int) -> Process:
        """Take up again the process ``pid`` (its :attr:`Process.pid`) that a :meth:`pause` cut off from
        its caller, as E2B's ``commands.connect``; also one running in the snapshot this machine was
        restored from.

        Such a process runs on in the guest, its output kept for whoever attaches
        (beyond 256 KiB it waits to write more); what its caller had not read when
        the machine paused may be lost. The :class:`Process` streams what comes
        after and its exit status, even if it ended meanwhile. One caller attaches
        a process once; closing that :class:`Process` kills it, as for :meth:`spawn`.

        :raises ExecError: if no such process waits (never cut off, or attached already)
        """
        return await self._guarded(lambda: self._start_process(AttachRequest(pid)))

    async def processes(self) -> list[GuestProcess]:
        """The processes started with :meth:`spawn` or :meth:`exec` that the guest still has: running
        (attached to their caller, or cut off by a pause and waiting for :meth:`attach`), or ended cut off
        with their exit status waiting, as E2B's ``commands.list``."""

        return decode_process_list((await self._guarded(lambda: self._finish(ListRequest()))).stdout)

    async def _start_process(self, request: ProcessRequest) -> Process:
        return await self._open_agent(
            lambda connection: Process._start(connection, request, tasks=self._backend.tasks, lost=self._lost)
        )

    async def _finish(self, request: ProcessRequest) -> ExecResult:
        """Run the agent's ``request`` to its end on a connection of its own (a command without input)."""
        async with await self._connect_agent() as connection:
            return await execute(connection, request)

    async def _open_agent(self, start: Callable[[anyio.abc.ByteStream], Awaitable[T]]) -> T:
        """``start(connection)`` on a fresh agent connection that what it returns keeps; closed if it fails."""
        connection = await self._connect_agent()
        try:
            return await start(connection)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await connection.aclose()
            raise

    async def exec(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        workdir: str = "",
        user: str | int = "",
        stdin: bytes | None = None,
        timeout: float | None = None,
    ) -> ExecResult:
        """Run ``argv`` to completion and collect its output (see :meth:`spawn`).

        Raises :class:`ExecTimeout`, after killing the command, if it outlives
        ``timeout`` seconds.
        """
        request = CommandRequest(tuple(argv), dict(env or {}), workdir, str(user))

        async def run() -> ExecResult:
            async with await self._connect_agent() as connection:  # closing it kills the command
                try:
                    with anyio.fail_after(timeout):
                        return await execute(connection, request, stdin)
                except TimeoutError:
                    raise ExecTimeout(f"{argv[0]!r} ran longer than {timeout} s and was killed") from None

        return await self._guarded(run)

    async def write_file(self, path: str, data: bytes, *, mode: int = 0o644) -> None:
        """Create or replace the guest file ``path`` with ``data`` and permission bits ``mode``.

        Raises :class:`GuestFileError` (with ``errno``) when the guest cannot write it.
        """

        async def write() -> None:
            async with await self._connect_agent() as connection:
                await files.write_file(connection, path, data, mode)

        await self._guarded(write)

    async def read_file(self, path: str) -> bytes:
        """The content of the guest file ``path``; :class:`GuestFileError` if it cannot be read."""

        async def read() -> bytes:
            async with await self._connect_agent() as connection:
                return await files.read_file(connection, path)

        return await self._guarded(read)

    @overload
    async def open(self, path: str, mode: Literal["rb"] = "rb", *, permissions: int = 0o644) -> GuestFileReader: ...

    @overload
    async def open(self, path: str, mode: Literal["wb"], *, permissions: int = 0o644) -> GuestFileWriter: ...

    async def open(
        self, path: str, mode: Literal["rb", "wb"] = "rb", *, permissions: int = 0o644
    ) -> GuestFileReader | GuestFileWriter:
        """The guest file ``path`` as an anyio byte stream, for files too large to hold: ``"rb"`` receives
        its content, ``"wb"`` creates or replaces it (with ``permissions``) from what is sent.

        Use it with ``async with``; closing a ``"wb"`` stream waits until the guest has written
        everything (a stream left early still ends the file there).

        :raises GuestFileError: if the guest cannot open, read or write it (``errno`` says why)
        """
        if mode not in ("rb", "wb"):
            raise ValueError(f"mode {mode!r}: a guest file opens as 'rb' or 'wb'")

        async def start(connection: anyio.abc.ByteStream) -> GuestFileReader | GuestFileWriter:
            if mode == "rb":
                return await files.open_reader(connection, path)
            return await files.open_writer(connection, path, permissions)

        return await self._guarded(lambda: self._open_agent(start))

    async def upload(self, host_path: str | os.PathLike[str], guest_path: str) -> None:
        """Copy the host file or tree ``host_path`` into the guest, as ``docker cp`` does.

        An existing guest directory ``guest_path`` receives it inside, under its own
        name; otherwise ``guest_path`` (whose parent must exist) becomes the copy.
        Modes, symlinks (not followed) and hardlinks are kept; files belong to root.
        It streams: a tree of any size goes through bounded memory.

        :raises FileNotFoundError: if ``host_path`` does not exist
        :raises GuestFileError: if the guest cannot write it (``errno`` says why)
        """
        source = Path(os.path.abspath(host_path))
        source.lstat()
        request = TreeRequest(guest_path, source.name)

        async def copy() -> None:
            await trees.upload(await self._start_process(request), source, guest_path)

        await self._guarded(copy)

    async def download(self, guest_path: str, host_path: str | os.PathLike[str]) -> None:
        """Copy the guest file or tree ``guest_path`` to the host, as ``docker cp`` does.

        An existing host directory ``host_path`` receives it inside, under the guest
        path's last component; otherwise ``host_path`` becomes the copy. Modes
        (without setuid and setgid) and symlinks are kept; files belong to the
        caller. The guest is not trusted: nothing is written outside the copy.

        :raises UnsafeGuestTree: if an entry would leave the copy (absolute, ``..``, through a
            symlink, a hardlink to outside) or is a device node or fifo
        :raises GuestFileError: if the guest cannot read ``guest_path`` (``errno`` says why)
        :raises ValueError: if ``host_path`` is a directory and ``guest_path`` is ``/``
        """
        directory, name = download_target(host_path, guest_path)
        extractor = TreeExtractor(directory, name, guest_path)

        async def copy() -> None:
            await trees.download(await self._start_process(TreeRequest(guest_path)), extractor, guest_path)

        await self._guarded(copy)

    async def export_changes(self, host_path: str | os.PathLike[str]) -> None:
        """Write what the guest changed in its root filesystem, as ``docker commit`` takes it, to ``host_path``.

        The file is an OCI image layer (an uncompressed tar): files added or changed,
        with owners, modes, times, xattrs and hardlinks; a deletion as a ``.wh.``
        whiteout; a directory made anew over the image's as opaque. What init writes
        for the network (``/etc/resolv.conf``, ``hosts``, ``hostname``) is left out,
        as docker leaves it out. Volumes are not the root's: they are not in it.

        :raises GuestFileError: if the guest cannot (a machine booted without an image root)
        """
        request = LayerRequest()

        async def copy() -> None:
            with open(host_path, "wb") as sink:
                await trees.receive(await self._start_process(request), sink, "/")

        await self._guarded(copy)

    async def mount(self, volume: Volume, target: str) -> None:
        """Attach ``volume`` to this running machine and mount it at ``target`` (made if missing).

        It goes into one of the empty drives the machine was made with
        (``volume_slots``: two for a machine started from an image, and so for its
        snapshots' restores), is the machine's until it ends, and comes back with
        it after a :meth:`pause`. What the guest writes to a writable one is on the
        volume once the machine closes or pauses (see ``volumes`` in
        :class:`RestoreOptions`). There is no unmount: the machine's end detaches it.

        :raises DiskError: if no drive is empty, the volume is in use (by another
            machine, or a paused one), or the guest cannot mount it
        :raises ValueError: for a mount point not below ``/``, or one this machine has a volume at
        """
        path = mount_point(target)
        async with self._drives:
            if path in self._made_with.volumes:
                raise ValueError(f"machine {self.id} has a volume at {path} already")
            await anyio.to_thread.run_sync(_paused.check_unclaimed, volume.path)
            await volume.settle()

            async def attach() -> None:
                device = await self._backend.attach_disk(volume.disk)
                self._made_with = dataclasses.replace(
                    self._made_with, volumes={**self._made_with.volumes, path: volume}
                )
                result = await self._finish(MountRequest(GuestMount(device, path, volume.fs, volume.read_only)))
                if result.exit_code != 0:
                    said = result.stderr.decode(errors="replace").strip()
                    raise DiskError(f"cannot mount volume {volume.path} at {path} in the guest: {said}")

            await self._guarded(attach)

    async def vector_state(self) -> VectorState:
        """Whether guest processes keep their own AVX registers, as init found at boot.

        ``LEAKS`` (software KVM without the VMM's help, e.g. another VMM on our kernel)
        means the guest runs glibc, Go and OpenBLAS AVX-free, and other code that
        uses AVX may see another process's register contents. Waits for the agent.
        """

        async def ask() -> VectorState:
            async with await self._connect_agent() as connection:
                hello, _ = await greet(connection)
            return hello.vector_state

        return await self._guarded(ask)

    async def wait_for_port(self, port: int) -> None:
        """Until a guest process accepts vsock connections on ``port`` (bounded like the agent's wait)."""

        async def poll() -> None:
            while True:
                try:
                    stream = await self._backend.connect(port)
                except VsockConnectionReset:
                    await anyio.sleep(PORT_POLL_INTERVAL)
                    continue
                await stream.aclose()
                return

        await self._guarded(lambda: self._backend.until_guest(poll, f"listened on vsock port {port}"))

    async def _connect_agent(self) -> anyio.abc.ByteStream:
        async def connect() -> anyio.abc.ByteStream:
            while True:
                try:
                    return await self._backend.connect(AGENT_PORT)
                except VsockConnectionReset:
                    await anyio.sleep(AGENT_RETRY_INTERVAL)  # the agent is not listening yet

        connection = await self._backend.until_guest(connect, "let its agent be reached")
        if self._rename_guest:
            # A restored clone still has the snapshot's hostname: the agent takes its own before the request.
            await connection.send(encode_hostname(self.id))
            self._rename_guest = False
        return connection

    async def _sync_volumes(self) -> None:
        """Have the guest write what it holds for its writable volumes through to them, before the host
        stops or pauses it (guest/include/mount_volume.h). Bounded by :data:`SYNC_SECONDS`; a guest that
        cannot is logged, never raised: the journal keeps the volume whole."""
        if all(volume.read_only for volume in self._made_with.volumes.values()):
            return
        with anyio.move_on_after(SYNC_SECONDS) as waited:
            try:
                await self._finish(SyncRequest())
            except AsupermachineError as error:
                logger.warning("machine %s could not sync its volumes: %s", self.id, error)
        if waited.cancelled_caught:
            logger.warning("machine %s did not sync its volumes within %s s", self.id, SYNC_SECONDS)

    async def pause(self, *, idle_within: float = 0.0) -> PausedMachine:
        """Save this machine under its id and close it, freeing its memory; returns what was saved.

        :meth:`Runtime.resume` (or :meth:`Machine.resume`) brings it back, in this
        process or another, as it was: same id and hostname, its processes still
        running, its files, volumes and network, and what was left of its timeout
        (which does not count while it is paused). Its writable volumes and disks
        stay where they are and stay its own: no other machine attaches them until
        it is resumed and ends, or is removed. ``idle_within`` is as for :meth:`snapshot`.

        :raises SnapshotError: if it cannot be saved; the machine then runs on, unchanged.
        """
        if self._close_reason is not None:
            await self._until_freed()
        self._check_usable()
        await self._sync_volumes()  # its volumes whole on their own, should the pause be removed unresumed
        timeout = None if self._life.deadline == float("inf") else max(0.0, self._life.deadline - anyio.current_time())
        network = self._made_with.network
        egress = self._backend.egress
        if network is not None and egress is not None:
            policy = egress.policy
            network = dataclasses.replace(network, allow_out=policy.allow_out, deny_out=policy.deny_out)
        staged = await anyio.to_thread.run_sync(_paused.staging, self.id)
        saved: list[PausedMachine] = []

        def then_stop(snapshot: Snapshot) -> None:
            machine = PausedMachine(
                id=self.id, paused_at=datetime.now(UTC), memory_mib=self.memory_mib, timeout=timeout,
                network=network, volumes=self._made_with.volumes,
                kept=tuple(map(_paused.KeptDisk.of, snapshot.kept_disks)), path=_paused.paused_root() / self.id,
            )
            _paused.commit(staged.path, machine, snapshot)
            saved.append(machine)
            self._close_reason = CloseReason.PAUSED  # before the guest stops: its end is this pause

        try:
            async with self._drives:
                await self._backend.snapshot(staged.path / _paused.SNAPSHOT_NAME, idle_within, then_stop=then_stop)
        finally:
            if not saved:
                await anyio.to_thread.run_sync(functools.partial(shutil.rmtree, staged.path, ignore_errors=True))
            staged.close()
        self._request_close(CloseReason.PAUSED)
        await self._until_freed()
        return saved[0]

    async def snapshot(self, path: str | os.PathLike[str], *, idle_within: float = 0.0) -> Snapshot:
        """Save this VM into the new directory ``path``; it runs on afterwards.

        The guest is held still while its state and memory are written (a
        fraction of a second for a small guest), then continues. With
        ``idle_within``, the snapshot waits up to that many seconds for a moment
        when the guest has nothing to run (say, still tearing down a finished
        process), so that restores resume an idle guest and answer at once.
        A writable disk (a volume, say) is copied into the snapshot as it is then
        (sparse, a reflink where the filesystem has them); each restore writes a
        private copy-on-write view of it. Restore with :meth:`Runtime.restore`.
        Raises :class:`SnapshotError` for a VM that stopped, ``FileExistsError``
        if ``path`` exists.
        """
        async with self._drives:
            return await self._guarded(lambda: self._backend.snapshot(Path(path), idle_within))

