"""The keyword options of starting, booting and restoring a machine: typed once, shared by every entry point."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TypedDict

from ._core.virtio.blk import Disk
from ._network import NetworkOption
from ._volume import Volume


class RestoreOptions(TypedDict, total=False):
    """Options every machine takes."""

    timeout: float | None
    """Seconds the machine may live (as E2B's sandbox timeout); then it is closed. None: until closed."""
    wait: bool
    """Beyond the runtime's ``max_machines``/``max_memory_mib``: wait for room (True, the default)
    or raise :class:`CapacityExceeded`."""
    console_capacity: int
    """Bytes of unread console output kept; then the oldest is dropped."""
    network: NetworkOption
    """True: a NIC with egress through its own passt; False: no NIC; a :class:`Network` for published
    ports, the host's loopback and DNS. Default: True for an image, False for a bare boot, and for a
    restore whatever the snapshot was made with (it cannot change)."""
    volumes: Mapping[str, Volume]
    """Volumes by mount point (``{"/data": vol}``), mounted before the command runs or the machine is
    handed over: at a boot by init (attached after ``disks``), at a restore by the agent, each in one of
    the snapshot's empty drives (``volume_slots``). What the guest writes to a writable one is on it
    once the machine closes or pauses (the guest syncs first); a machine whose process is killed loses
    at most its last second of writes, never the filesystem."""


class BootOptions(RestoreOptions, total=False):
    """Options of a machine booted from a kernel."""

    initramfs: str | os.PathLike[str] | None
    """An initramfs instead of the project's init and agent."""
    command: Sequence[str] | None
    """The main process (for an image: its CMD, after the entrypoint); the machine ends with it."""
    env: Mapping[str, str] | None
    """Environment of the main process and every exec (added to the image's)."""
    workdir: str
    """Working directory of the main process and every exec (default: the image's, else ``/``)."""
    user: str
    """Name, uid, ``user:group`` or ``uid:gid`` of the main process and every exec (default: the image's, else root)."""
    vcpus: int
    memory_mib: int
    root: Disk | None
    """The root filesystem (read-only erofs or ext4 under an in-memory overlay): ``/dev/vda``."""
    disks: Sequence[Disk]
    """More disks: ``/dev/vdb``, ``/dev/vdc``, ... in order."""
    changes: Disk | None
    """A writable ext4 disk that holds what the guest changes in its root (the overlay's upper), instead of
    memory: a build's RUN writes gigabytes there. After ``disks``; :meth:`Machine.export_changes` reads it."""
    volume_slots: int
    """Empty drives kept for volumes mounted later (:meth:`Machine.mount`, a restore's ``volumes``):
    default 0 for a bare boot, :data:`DEFAULT_VOLUME_SLOTS` for an image. A snapshot keeps those left."""
    kernel_log: bool
    """Show the kernel's boot messages on the console."""
    cmdline_extra: str
    """Extra kernel command-line words."""


class StartOptions(BootOptions, total=False):
    """Options of a machine started from an image."""

    run: bool
    """Run the image's own entrypoint and cmd as the main process (with no ``command``)."""
    insecure: bool
    """Plain HTTP to a registry that is not on loopback."""


RESTORE_KEYS = frozenset(RestoreOptions.__annotations__)
