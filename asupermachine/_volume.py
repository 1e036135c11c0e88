"""``Volume``: a filesystem in a sparse file that outlives the machines it is mounted in.

``volumes={"/data": vol}`` on :meth:`Runtime.start` and :meth:`Runtime.boot` attaches
each volume as a disk after ``disks`` and has init mount it before the command runs.
A writable volume is attached to one running machine at a time, a read-only one to
any number (see :mod:`._core.virtio.blk_lock`).
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
from ._errors import DiskError

FILESYSTEMS = ("ext4",)
MIN_SIZE_MIB = 8
"""Below this mkfs.ext4 leaves no room for a journal worth having."""
SYSTEM_BINARIES = "/usr/sbin:/sbin"
"""Where mkfs lives on distributions that keep it off a user's PATH."""


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
        mkfs = shutil.which(f"mkfs.{fs}", path=f"{os.environ.get('PATH', '')}:{SYSTEM_BINARIES}")
        if mkfs is None:
            raise DiskError(f"mkfs.{fs} is missing: install e2fsprogs")
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


def attachments(volumes: Mapping[str, Volume], first_index: int) -> tuple[tuple[Disk, ...], tuple[GuestMount, ...]]:
    """The disks for ``volumes`` (``target: volume``), from disk slot ``first_index`` on, and init's mounts of them.

    :raises ValueError: for a target that is not an absolute path below ``/``, or two the same.
    """
    mounts = []
    for index, (target, volume) in enumerate(volumes.items(), first_index):
        path = posixpath.normpath(target)
        if not path.startswith("/") or path in ("/", "//") or "\0" in path:
            raise ValueError(f"a volume's mount point must be an absolute path below /, not {target!r}")
        mounts.append(GuestMount(block_device(index), path, volume.fs, volume.read_only))
    if len({mount.target for mount in mounts}) < len(mounts):
        raise ValueError(f"two volumes have the same mount point: {', '.join(volumes)}")
    return tuple(volume.disk for volume in volumes.values()), tuple(mounts)
