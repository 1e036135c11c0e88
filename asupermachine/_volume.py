"""``Volume``: a filesystem in a sparse file that outlives the machines it is mounted in.

``volumes={"/data": vol}`` on :meth:`Runtime.start` and :meth:`Runtime.boot` attaches
each volume as a disk after ``disks`` and has init mount it before the command runs.
On a running machine (:meth:`Machine.mount`, a restore's ``volumes=``, a pool's
:meth:`Pool.acquire`) it goes into one of the empty drives the machine was made with
(``volume_slots``) and the agent mounts it. A writable volume is attached to one
running machine at a time, a read-only one to any number (see :mod:`._core.virtio.blk_lock`).
"""

from __future__ import annotations

import os
import posixpath
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import anyio

from ._core.microvm import block_device
from ._core.recipe import GuestMount
from ._core.virtio.blk import Disk
from ._core.virtio.blk_lock import lock_disk
from ._errors import DiskError

FILESYSTEMS = ("ext4",)
MIN_SIZE_MIB = 8
"""Below this mkfs.ext4 leaves no room for a journal worth having."""
DEFAULT_VOLUME_SLOTS = 2
"""Empty drives a machine started from an image (and so its snapshots) keeps for volumes mounted later."""
SYSTEM_BINARIES = "/usr/sbin:/sbin"
"""Where e2fsprogs lives on distributions that keep it off a user's PATH."""
# ext4 disk layout, "The Super Block": s_feature_incompat and its "needs recovery" bit.
EXT4_SUPERBLOCK_OFFSET = 1024
EXT4_S_FEATURE_INCOMPAT = 0x60
EXT4_FEATURE_INCOMPAT_RECOVER = 0x4


@dataclass(frozen=True)
class Volume:
    """An existing volume file (made by :meth:`create` or ``mkfs.ext4``), to mount read-write or ``read_only``."""

    path: Path
    read_only: bool = False
    fs: str = "ext4"

    def __post_init__(self) -> None:
        if self.fs not in FILESYSTEMS:
            raise ValueError(f"volume filesystem {self.fs!r} is not supported; use one of {', '.join(FILESYSTEMS)}")
        object.__setattr__(self, "path", Path(self.path))

    @classmethod
    async def create(cls, path: str | os.PathLike[str], *, size_mib: int, fs: str = "ext4") -> Volume:
        """Make a new empty volume of ``size_mib`` MiB at ``path`` (a sparse file: it takes room as it fills).

        :raises FileExistsError: if ``path`` exists.
        :raises ValueError: for a size under :data:`MIN_SIZE_MIB` or an unsupported ``fs``.
        :raises DiskError: if ``mkfs.ext4`` (e2fsprogs) is missing or fails.
        """
        volume = cls(Path(path), fs=fs)
        if size_mib < MIN_SIZE_MIB:
            raise ValueError(f"a volume needs at least {MIN_SIZE_MIB} MiB, not {size_mib}")
        mkfs = _e2fsprogs(f"mkfs.{fs}")
        with open(volume.path, "xb") as file:
            file.truncate(size_mib << 20)
        # -m 0: no blocks reserved for root, a volume holds data, not a system.
        result = await anyio.run_process([mkfs, "-q", "-F", "-m", "0", str(volume.path)], check=False)
        if result.returncode != 0:
            volume.path.unlink()
            raise DiskError(f"mkfs.{fs} {volume.path} failed: {result.stderr.decode(errors='replace').strip()}")
        return volume

    @property
    def disk(self) -> Disk:
        return Disk(self.path, read_only=self.read_only)

    async def settle(self) -> None:
        """Replay on the host the journal a writer's guest left (they stop without unmounting) if read-only.

        A guest mounts a journal that needs replaying only from a writable device,
        so a read-only one would refuse it. Under the disk's exclusive lock.

        :raises DiskError: if a machine writes the volume, or e2fsck fails.
        """
        if self.read_only and await anyio.to_thread.run_sync(self._needs_recovery):
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                lock_disk(fd, self.path, read_only=False, holder="")
                command = [_e2fsprogs("e2fsck"), "-p", "-E", "journal_only", str(self.path)]
                result = await anyio.run_process(command, check=False)
            finally:
                os.close(fd)
            if result.returncode not in (0, 1):  # 1: "errors corrected", the replay itself
                error = (result.stdout + result.stderr).decode(errors="replace").strip()
                raise DiskError(f"replaying the journal of volume {self.path} failed: {error}")

    def _needs_recovery(self) -> bool:
        try:
            with open(self.path, "rb") as file:
                file.seek(EXT4_SUPERBLOCK_OFFSET + EXT4_S_FEATURE_INCOMPAT)
                incompat = int.from_bytes(file.read(4), "little")
        except OSError:
            return False  # attaching it says what is wrong
        return bool(incompat & EXT4_FEATURE_INCOMPAT_RECOVER)


def _e2fsprogs(name: str) -> str:
    found = shutil.which(name, path=f"{os.environ.get('PATH', '')}:{SYSTEM_BINARIES}")
    if found is None:
        raise DiskError(f"{name} is missing: install e2fsprogs")
    return found


def mount_point(target: str) -> str:
    """``target`` normalized; ``ValueError`` unless it is an absolute path below ``/``."""
    path = posixpath.normpath(target)
    if not path.startswith("/") or path in ("/", "//") or "\0" in path:
        raise ValueError(f"a volume's mount point must be an absolute path below /, not {target!r}")
    return path


def by_mount_point(volumes: Mapping[str, Volume]) -> dict[str, Volume]:
    """``volumes`` under their normalized mount points; ``ValueError`` for a bad one, or two the same."""
    normalized = {mount_point(target): volume for target, volume in volumes.items()}
    if len(normalized) < len(volumes):
        raise ValueError(f"two volumes have the same mount point: {', '.join(volumes)}")
    return normalized


def attachments(volumes: Mapping[str, Volume], first_index: int) -> tuple[tuple[Disk, ...], tuple[GuestMount, ...]]:
    """The disks for ``volumes`` (``target: volume``), from disk slot ``first_index`` on, and init's mounts of them.

    :raises ValueError: for a target that is not an absolute path below ``/``, or two the same.
    """
    normalized = by_mount_point(volumes)
    mounts = tuple(
        GuestMount(block_device(index), path, volume.fs, volume.read_only)
        for index, (path, volume) in enumerate(normalized.items(), first_index)
    )
    return tuple(volume.disk for volume in normalized.values()), mounts
