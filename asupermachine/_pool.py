"""``Pool``: VMs restored from one snapshot, kept warm and handed out one caller at a time."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

import anyio
import anyio.abc

if TYPE_CHECKING:
    from ._runtime import Runtime

from ._hooks import default_runtime
from ._machine import Machine
from ._network import NetworkOption
from ._options import RestoreOptions
from ._volume import Volume, by_mount_point
from .snapshot.snapshot import Snapshot


@dataclass(frozen=True)
class PoolStats:
    idle: int
    """Restored and waiting to be acquired."""
    in_use: int
    restoring: int
    restored: int
    """Restores started so far, in all."""
    recycled: int
    """VMs ended on release (``restore_on_release``) or found stopped."""


@dataclass
class _Slot:
    vm: Machine
    release: anyio.Event
    """Set to end the VM."""


class Pool:
    """Keeps ``min`` VMs restored from ``snapshot`` ready, and at most ``max`` alive.

    ``async with Pool(snapshot) as pool: async with pool.acquire() as vm: ...``.
    Replacements are restored in the background as VMs are taken. With
    ``restore_on_release`` (the default) a returned VM is discarded and a fresh
    restore takes its place, so every caller gets the snapshot's state exactly;
    without it, a VM goes back to the pool as its last user left it. The VMs
    run on ``runtime`` (default: the event loop's); leaving the block closes them all.
    ``network`` is each restore's (default: the snapshot's); a callable is asked
    for each VM, so that each can publish its own host ports.
    """

    def __init__(
        self,
        snapshot: Snapshot | str | os.PathLike[str],
        *,
        min: int = 1,
        max: int = 8,
        restore_on_release: bool = True,
        runtime: Runtime | None = None,
        network: NetworkOption | Callable[[], NetworkOption] | None = None,
    ) -> None:
        if not 0 <= min <= max or max < 1:
            raise ValueError(f"need 0 <= min <= max and max >= 1, not min={min}, max={max}")
        self._source = snapshot
        self._min, self._max = min, max
        self._restore_on_release = restore_on_release
        self._runtime = runtime
        self._network = network
        self._idle: list[_Slot] = []
        self._in_use = self._restoring = self._waiters = 0
        self._restored = self._recycled = 0
        self._changed = anyio.Event()
        self._exit = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Pool:
        source = self._source
        if isinstance(source, Snapshot):
            self._snapshot = source
        else:
            self._snapshot = await anyio.to_thread.run_sync(Snapshot.load, source)
        if self._runtime is None:
            self._runtime = await default_runtime()
        self._tasks = await self._exit.enter_async_context(anyio.create_task_group())
        self._exit.callback(self._tasks.cancel_scope.cancel)
        self._tasks.start_soon(self._keep_filled, name="pool-filler")
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> bool | None:
        return await self._exit.__aexit__(kind, error, traceback)

    def stats(self) -> PoolStats:
        return PoolStats(len(self._idle), self._in_use, self._restoring, self._restored, self._recycled)

    @contextlib.asynccontextmanager
    async def acquire(self, *, volumes: Mapping[str, Volume] | None = None) -> AsyncIterator[Machine]:
        """A running VM for the block's duration; waits while ``max`` are in use.

        ``volumes`` are mounted in it first (see :meth:`Machine.mount`), in the
        snapshot's empty drives; the VM is then never reused, even without
        ``restore_on_release``, and leaving the block frees them.
        """
        wanted = by_mount_point(volumes or {})
        self._waiters += 1
        self._notify()
        try:
            slot = await self._take_idle()
        finally:
            self._waiters -= 1
        self._in_use += 1
        self._notify()
        try:
            for target, volume in wanted.items():
                await slot.vm.mount(volume, target)
            yield slot.vm
        finally:
            if wanted:  # closed before the block is left: the volumes are free for the caller's next use
                with anyio.CancelScope(shield=True):
                    await slot.vm.close()
            self._in_use -= 1
            if self._restore_on_release or wanted or not slot.vm.running:
                self._discard(slot)
            else:
                self._idle.append(slot)
            self._notify()

    async def _take_idle(self) -> _Slot:
        while True:
            while not self._idle:
                await self._next_change()
            slot = self._idle.pop(0)
            if slot.vm.running:
                return slot
            self._discard(slot)

    def _discard(self, slot: _Slot) -> None:
        slot.release.set()
        self._recycled += 1

    async def _keep_filled(self) -> None:
        while True:
            wanted = min(self._max - self._in_use, max(self._min, self._waiters))
            while self._restoring + len(self._idle) < wanted:
                self._restoring += 1
                self._restored += 1
                self._tasks.start_soon(self._serve_one, name="pool-vm")
            await self._next_change()

    async def _serve_one(self) -> None:
        """Restore one VM, offer it, and keep it alive until it is released."""
        restoring = True
        assert self._runtime is not None, "set on entry"
        try:
            options: RestoreOptions = {}
            if self._network is not None:
                options["network"] = self._network() if callable(self._network) else self._network
            async with await self._runtime.restore(self._snapshot, **options) as vm:
                slot = _Slot(vm, anyio.Event())
                self._restoring -= 1
                restoring = False
                self._idle.append(slot)
                self._notify()
                await slot.release.wait()
        finally:
            if restoring:
                self._restoring -= 1
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def _next_change(self) -> None:
        await self._changed.wait()
