"""What a :class:`Machine` drives: a running VM, or (in users' tests) :class:`asupermachine.testing.FakeGuest`."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

import anyio
import anyio.abc

from ._core.console import Console
from ._errors import AsupermachineError, NetBackendError
from ._outcome import GuestExit

if TYPE_CHECKING:
    from ._core.net.egress import EgressFilter
    from ._core.running import GuestStop
    from ._core.virtio.blk import Disk
    from ._core.vsock.host import VsockListener
    from .snapshot.snapshot import Snapshot

T = TypeVar("T")


class Backend(Protocol):
    """A guest as a :class:`Machine` sees it: streams to its ports, its console, how it ended."""

    tasks: anyio.abc.TaskGroup
    """Where the machine's helper tasks (a process's output pump) run."""
    stopped: GuestStop
    """Set once the guest has stopped."""

    @property
    def console(self) -> Console: ...

    @property
    def memory_mib(self) -> int: ...

    @property
    def network_failure(self) -> NetBackendError | None: ...

    @property
    def egress(self) -> EgressFilter | None:
        """The filter the guest's frames pass; None with no network."""
        ...

    async def connect(self, port: int) -> anyio.abc.ByteStream:
        """A stream to the guest's vsock ``port``; :class:`VsockConnectionReset` if nothing listens."""
        ...

    def listen(self, port: int) -> contextlib.AbstractAsyncContextManager[VsockListener]: ...

    async def until_guest(self, step: Callable[[], Awaitable[T]], what: str) -> T:
        """``step``, unless the guest stops first or takes too long (:class:`GuestUnresponsive`)."""
        ...

    def result(self) -> GuestExit:
        """How the guest ended (once :attr:`stopped`); raises its :class:`GuestError` if it failed."""
        ...

    def stopped_error(self) -> AsupermachineError:
        """What a call on the stopped guest raises."""
        ...

    def halt(self) -> None:
        """Stop the guest at once, from any thread."""
        ...

    def host_stopped(self) -> bool:
        """Whether the guest runs or the host stopped it (it did not end by itself)."""
        ...

    async def snapshot(
        self, path: Path, idle_within: float, *, then_stop: Callable[[Snapshot], None] | None = None
    ) -> Snapshot:
        """Save the guest into the new directory ``path``; with ``then_stop``, call it and stop the guest for good."""
        ...

    async def attach_disk(self, disk: Disk) -> str:
        """Put ``disk`` in the guest's first empty drive; the guest's name of it (``/dev/vdc``).

        Raises :class:`DiskError` if no drive is empty or ``disk`` cannot be used.
        """
        ...

    def kvm_stats(self) -> dict[str, int]:
        """KVM's cumulative counters of the VM (empty without KVM)."""
        ...
