"""Copy-on-write block map (sans-IO): which file each byte of a disk comes from.

A copy-on-write disk is a frozen, read-only base and a private overlay of the same
size; ``present`` holds one flag per :data:`COW_BLOCK` bytes, set once the overlay
holds that block. These functions only plan; :mod:`.blk_backend` does the I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

COW_BLOCK = 4096
"""Bytes per block of the map: a page, what Linux's ext4 writes at a time."""


class Source(enum.Enum):
    BASE = "base"
    OVERLAY = "overlay"


@dataclass(frozen=True)
class Run:
    """``length`` bytes at disk offset ``offset``, all found in ``source``."""

    source: Source
    offset: int
    length: int


def blocks_of(offset: int, length: int) -> range:
    """The indices of the blocks that bytes ``[offset, offset + length)`` touch."""
    return range(offset // COW_BLOCK, -(-(offset + length) // COW_BLOCK)) if length else range(0)


def read_runs(present: bytearray, offset: int, length: int) -> list[Run]:
    """Where to read bytes ``[offset, offset + length)`` from: maximal runs of one source, in order."""
    runs: list[Run] = []
    end = offset + length
    for block in blocks_of(offset, length):
        start, stop = max(offset, block * COW_BLOCK), min(end, (block + 1) * COW_BLOCK)
        source = Source.OVERLAY if present[block] else Source.BASE
        if runs and runs[-1].source is source:
            last = runs[-1]
            runs[-1] = Run(source, last.offset, last.length + stop - start)
        else:
            runs.append(Run(source, start, stop - start))
    return runs


def copy_ups(present: bytearray, offset: int, length: int) -> list[int]:
    """The blocks a write of ``[offset, offset + length)`` covers only in part and the overlay lacks.

    Each must be copied from the base into the overlay before the write, which then
    marks every block it touches as present.
    """
    touched = blocks_of(offset, length)
    if not touched:
        return []
    edges = {touched[0]} if offset % COW_BLOCK else set()
    if (offset + length) % COW_BLOCK:
        edges.add(touched[-1])
    return sorted(block for block in edges if not present[block])
