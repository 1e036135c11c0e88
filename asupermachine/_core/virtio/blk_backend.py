"""Where a virtio-blk device's bytes live: a raw file, or a copy-on-write overlay on a frozen base.

:class:`~.blk.Block` serves requests through :class:`DiskBackend` alone; both
backends move data between the files and guest memory views without copies.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from ..sparse_copy import clone_or_copy, copy_data, copy_range
from .blk_cow import COW_BLOCK, Source, blocks_of, copy_ups, read_runs


class DiskBackend(Protocol):
    def read(self, views: list[memoryview], offset: int) -> int:
        """Fill ``views`` from disk offset ``offset`` (bytes); returns the bytes read."""

    def write(self, views: list[memoryview], offset: int) -> int:
        """Write ``views`` at disk offset ``offset`` (bytes); returns the bytes written."""

    def flush(self) -> None:
        """Make what was written durable."""

    def freeze(self, target_fd: int) -> None:
        """Copy the disk as the guest sees it now into the empty file ``target_fd``, holes kept."""

    def close(self) -> None: ...


class RawFile:
    """The disk is the file ``fd`` (owned by the caller)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def read(self, views: list[memoryview], offset: int) -> int:
        return os.preadv(self._fd, views, offset)

    def write(self, views: list[memoryview], offset: int) -> int:
        return os.pwritev(self._fd, views, offset)

    def flush(self) -> None:
        os.fsync(self._fd)

    def freeze(self, target_fd: int) -> None:
        clone_or_copy(self._fd, target_fd)

    def close(self) -> None:
        pass


class Overlay:
    """The disk is ``base_fd`` (read-only, owned by the caller, never written) under a private overlay.

    The overlay is an unnamed sparse file in ``directory``: it vanishes when closed,
    or when the process dies. Blocks the guest writes go there (see :mod:`.blk_cow`).
    """

    def __init__(self, base_fd: int, size: int, directory: Path) -> None:
        self._base = base_fd
        self._size = size
        self._fd = os.open(directory, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(self._fd, size)
        except BaseException:
            os.close(self._fd)
            raise
        self._present = bytearray(-(-size // COW_BLOCK))

    def read(self, views: list[memoryview], offset: int) -> int:
        runs = read_runs(self._present, offset, sum(map(len, views)))
        done = 0
        for run, pieces in zip(runs, _split(views, [run.length for run in runs]), strict=True):
            done += os.preadv(self._fd if run.source is Source.OVERLAY else self._base, pieces, run.offset)
        return done

    def write(self, views: list[memoryview], offset: int) -> int:
        length = sum(map(len, views))
        for block in copy_ups(self._present, offset, length):
            os.pwrite(self._fd, os.pread(self._base, COW_BLOCK, block * COW_BLOCK), block * COW_BLOCK)
        done = os.pwritev(self._fd, views, offset)
        for block in blocks_of(offset, length):
            self._present[block] = 1
        return done

    def flush(self) -> None:
        os.fsync(self._fd)

    def freeze(self, target_fd: int) -> None:
        copy_data(self._base, target_fd, self._size)
        for run in read_runs(self._present, 0, self._size):
            if run.source is Source.OVERLAY:
                copy_range(self._fd, target_fd, run.offset, run.length)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _split(views: list[memoryview], lengths: list[int]) -> Iterator[list[memoryview]]:
    """``views``, cut into consecutive pieces of ``lengths`` bytes (slices, not copies)."""
    queue = [view for view in views if len(view)]
    for length in lengths:
        pieces = []
        while length:
            head = queue[0]
            if len(head) <= length:
                pieces.append(queue.pop(0))
                length -= len(head)
            else:
                pieces.append(head[:length])
                queue[0] = head[length:]
                length = 0
        yield pieces
