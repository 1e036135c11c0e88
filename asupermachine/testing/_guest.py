"""A whole :class:`Machine` over a fake guest: code under test uses the real handle, a :class:`FakeAgent` answers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.abc

from .._core.agent.protocol import AGENT_PORT
from .._core.console import Console
from .._core.net.egress import EgressFilter
from .._core.running import GuestStop
from .._core.virtio.blk import Disk
from .._core.vsock.host import VsockListener
from .._errors import (
    AsupermachineError,
    DiskError,
    GuestStopped,
    NetBackendError,
    SnapshotError,
    VsockConnectionReset,
    VsockError,
)
from .._machine import Machine
from .._outcome import GuestExit, ShutdownReason
from ..snapshot.snapshot import Snapshot
from ._agent import FakeAgent

T = TypeVar("T")


class FakeGuest:
    """A guest with nothing in it but ``agent``: its agent port answers, every other port refuses.

    :meth:`stop` ends it as a real guest ends (a test's way to play a guest that
    exits or panics); the machine then refuses calls with :class:`GuestStopped`.
    It has no console output, no network, no host ports, no drives and no snapshots.
    """

    def __init__(self, agent: FakeAgent, tasks: anyio.abc.TaskGroup, *, memory_mib: int = 256) -> None:
        self.agent = agent
        self.tasks = tasks
        self.stopped = GuestStop()
        self._memory_mib = memory_mib
        self._console = Console()
        self._exit: GuestExit | None = None

    @property
    def console(self) -> Console:
        return self._console

    @property
    def memory_mib(self) -> int:
        return self._memory_mib

    @property
    def network_failure(self) -> NetBackendError | None:
        return None

    @property
    def egress(self) -> EgressFilter | None:
        return None

    async def connect(self, port: int) -> anyio.abc.ByteStream:
        if port != AGENT_PORT or self.stopped.is_set():
            raise VsockConnectionReset(f"nothing listens on vsock port {port} in the fake guest")
        return self.agent.connect(self.tasks)

    def kvm_stats(self) -> dict[str, int]:
        return {}

    def listen(self, port: int) -> contextlib.AbstractAsyncContextManager[VsockListener]:
        raise VsockError("a fake guest connects to no host port")

    async def until_guest(self, step: Callable[[], Awaitable[T]], what: str) -> T:
        return await self.stopped.until(step, what, self.stopped_error)

    def result(self) -> GuestExit:
        assert self._exit is not None, "only once stopped"
        return self._exit

    def stopped_error(self) -> AsupermachineError:
        exit = self.result()
        return GuestStopped(f"the fake guest stopped ({exit.reason.value})", exit, "")

    def halt(self) -> None:
        self.stop(GuestExit(ShutdownReason.HOST))

    def host_stopped(self) -> bool:
        return self._exit is None or self._exit.reason is ShutdownReason.HOST

    async def attach_disk(self, disk: Disk) -> str:
        raise DiskError("a fake guest has no drives")

    async def snapshot(
        self, path: Path, idle_within: float, *, then_stop: Callable[[Snapshot], None] | None = None
    ) -> Snapshot:
        raise SnapshotError("running", "a fake guest has no state to snapshot")

    def stop(self, exit: GuestExit) -> None:
        """End the guest with ``exit`` (the first call counts)."""
        if self._exit is None:
            self._exit = exit
            self._console.close()
            self.stopped.set()


@contextlib.asynccontextmanager
async def fake_machine(agent: FakeAgent, *, machine_id: str = "fake0001") -> AsyncIterator[Machine]:
    """A :class:`Machine` whose guest is :class:`FakeGuest` over ``agent``, for the block.

    It behaves as one from a :class:`Runtime` does: exec, spawn, files,
    ``close()`` and ``MachineClosed`` after it; ``wait()`` once the guest stops.
    """
    async with anyio.create_task_group() as tasks:
        guest = FakeGuest(agent, tasks)
        machine = Machine._create(guest, machine_id, rename_guest=False)

        async def serve() -> None:
            reason = await machine._serve(None)
            guest.halt()
            await guest.console.release()
            machine._mark_closed(reason)

        tasks.start_soon(serve)
        try:
            yield machine
        finally:
            await machine.close()
