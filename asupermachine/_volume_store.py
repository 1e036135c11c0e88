"""Named volumes, as docker's: files in the user's data directory, made, listed and removed by name (blocking)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ._cache import data_root
from ._core.virtio.blk_lock import lock_disk
from ._volume import Volume

SUFFIX = ".ext4"
DEFAULT_SIZE_MIB = 1024
"""A named volume's size when none is given: sparse, so it costs what it holds."""
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # docker's rule for volume names


@dataclass(frozen=True)
class NamedVolume:
    name: str
    size: int
    """Bytes the filesystem spans."""
    used: int
    """Bytes the file takes on the host."""


def volumes_dir() -> Path:
    """Where named volumes live (``$XDG_DATA_HOME/asupermachine/volumes``)."""
    return data_root() / "volumes"


def named_path(name: str) -> Path:
    """The file of the volume ``name``; raises ``ValueError`` for a name docker would refuse."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"invalid volume name {name!r}: letters, digits, '_', '.' and '-', a letter or digit first")
    return volumes_dir() / f"{name}{SUFFIX}"


async def create_named(name: str, size_mib: int = DEFAULT_SIZE_MIB) -> Volume:
    """Make the volume ``name``; raises ``FileExistsError`` if there is one, else as :meth:`Volume.create`."""
    path = named_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    return await Volume.create(path, size_mib=size_mib)


def list_named() -> list[NamedVolume]:
    """Every named volume, by name."""
    found = []
    for path in sorted(volumes_dir().glob(f"*{SUFFIX}")):
        status = path.stat()
        found.append(NamedVolume(path.name.removesuffix(SUFFIX), status.st_size, status.st_blocks * 512))
    return found


def remove_named(name: str) -> None:
    """Delete the volume ``name``: ``FileNotFoundError`` if there is none, :class:`DiskError` while a VM has it."""
    path = named_path(name)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        lock_disk(fd, path, read_only=False, holder="")
        path.unlink()
    finally:
        os.close(fd)
