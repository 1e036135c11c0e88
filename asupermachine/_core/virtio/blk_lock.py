"""A disk image's attachment lock: many read-only users or one writer, across processes.

A ``flock`` on the descriptor the block device holds for the VM's lifetime: shared
for a read-only disk, exclusive for a writable one, so a second writer is refused
instead of corrupting the filesystem. The kernel drops it with the descriptor, on
every exit path. The writer records its VM's id in an extended attribute of the
file, and in a file of this user's (for filesystems without user xattrs, like
tmpfs), so whoever is refused can be told who holds the disk.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from ..._cache import cache_root
from ..._errors import DiskError

HOLDER_XATTR = "user.asupermachine.holder"


def lock_disk(fd: int, path: Path, *, read_only: bool, holder: str) -> None:
    """Take ``fd``'s lock, recording ``holder`` (a VM id) if writable; raises :class:`DiskError` if it is held."""
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if read_only else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        raise DiskError(f"disk image {path} is in use {_holders(fd)}: detach it there first") from None
    if not read_only and holder:
        with contextlib.suppress(OSError):  # a filesystem without user xattrs: the record below names it
            os.setxattr(fd, HOLDER_XATTR, holder.encode())
        with contextlib.suppress(OSError):  # unrecorded, the lock alone still protects
            record = _record(fd)
            record.parent.mkdir(parents=True, exist_ok=True)
            staged = record.with_name(f".{record.name}.{os.getpid()}")
            staged.write_text(holder)
            staged.replace(record)


def unlock_disk(fd: int, *, read_only: bool) -> None:
    """Forget a writer's record; the lock itself goes with ``fd``."""
    if not read_only:
        with contextlib.suppress(OSError):
            os.removexattr(fd, HOLDER_XATTR)
        with contextlib.suppress(OSError):
            _record(fd).unlink()


def _record(fd: int) -> Path:
    """Where this user keeps the id of the VM that writes the file ``fd`` (valid while its lock is held)."""
    status = os.fstat(fd)
    return cache_root() / "disk-holders" / f"{status.st_dev}-{status.st_ino}"


def _holders(fd: int) -> str:
    """Who holds the lock ``fd`` could not take: a writer (named when recorded) or read-only users."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        with contextlib.suppress(OSError):
            return f"writable by VM {os.getxattr(fd, HOLDER_XATTR).decode(errors='replace')}"
        with contextlib.suppress(OSError, UnicodeDecodeError):
            return f"writable by VM {_record(fd).read_text()}"
        return "writable by another VM"  # not recorded (another user's VM, say)
    fcntl.flock(fd, fcntl.LOCK_UN)
    return "read-only by other VMs"
