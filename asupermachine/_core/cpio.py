"""A writer for the ``newc`` cpio format the kernel unpacks as an initramfs (sans-IO)."""

from __future__ import annotations

import stat
from dataclasses import dataclass

NEWC_MAGIC = b"070701"
TRAILER_NAME = "TRAILER!!!"


@dataclass(frozen=True)
class CpioEntry:
    """One archive member. ``mode`` includes the file type bits (``stat.S_IFREG | 0o755``)."""

    name: str
    mode: int
    data: bytes = b""
    rdev_major: int = 0
    rdev_minor: int = 0


def _pad4(length: int) -> bytes:
    return b"\0" * (-length % 4)


def _member(inode: int, entry: CpioEntry) -> bytes:
    name = entry.name.encode() + b"\0"
    fields = (
        inode, entry.mode, 0, 0, 2 if stat.S_ISDIR(entry.mode) else 1, 0, len(entry.data),
        0, 0, entry.rdev_major, entry.rdev_minor, len(name), 0,
    )
    header = NEWC_MAGIC + b"".join(b"%08X" % field for field in fields)
    head = header + name
    return head + _pad4(len(head)) + entry.data + _pad4(len(entry.data))


def cpio_archive(entries: list[CpioEntry]) -> bytes:
    """The archive of ``entries`` in order, closed by the trailer member."""
    for entry in entries:
        if entry.name.startswith("/") or ".." in entry.name.split("/") or not entry.name:
            raise ValueError(f"cpio member name {entry.name!r} must be relative and inside the archive")
    members = [_member(inode, entry) for inode, entry in enumerate(entries, start=1)]
    members.append(_member(0, CpioEntry(TRAILER_NAME, 0)))
    return b"".join(members)
