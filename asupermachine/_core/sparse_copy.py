"""Cheap copies of disk files: a reflink where the filesystem shares blocks, else a copy of only the data.

Both keep holes holes, so a mostly-empty volume costs only what it holds.
"""

from __future__ import annotations

import errno
import fcntl
import os

FICLONE = 0x40049409
"""``_IOW(0x94, 9, int)`` from linux/fs.h: share all of one file's blocks with another."""
_UNSUPPORTED = {errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS}


def clone_or_copy(source_fd: int, target_fd: int) -> None:
    """Make the empty file ``target_fd`` a copy of ``source_fd``: a reflink if possible, else :func:`copy_data`."""
    try:
        fcntl.ioctl(target_fd, FICLONE, source_fd)
    except OSError as e:
        if e.errno not in _UNSUPPORTED:
            raise
        copy_data(source_fd, target_fd, os.fstat(source_fd).st_size)


def copy_data(source_fd: int, target_fd: int, size: int) -> None:
    """Copy ``source_fd``'s data extents into ``target_fd`` at the same offsets; holes stay holes.

    ``target_fd`` is sized to ``size`` bytes first.
    """
    os.ftruncate(target_fd, size)
    for start, end in data_extents(source_fd, size):
        copy_range(source_fd, target_fd, start, end - start)


def data_extents(fd: int, size: int) -> list[tuple[int, int]]:
    """The ``(start, end)`` byte ranges of ``fd`` below ``size`` that hold data (SEEK_DATA/SEEK_HOLE)."""
    extents = []
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:  # only a hole from here on
                break
            raise
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        if start < end:
            extents.append((start, end))
        offset = end
    return extents


def copy_range(source_fd: int, target_fd: int, offset: int, length: int) -> None:
    """Copy ``length`` bytes at ``offset`` from one file to the other, in the kernel."""
    end = offset + length
    while offset < end:
        done = os.copy_file_range(source_fd, target_fd, end - offset, offset, offset)
        if done == 0:
            raise OSError(errno.EIO, f"the source ended at {offset} bytes, before {end}")
        offset += done
