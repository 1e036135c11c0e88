"""The copy-on-write block map: a base plus the blocks the overlay holds reads as one plain disk."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from asupermachine._core.virtio.blk_cow import COW_BLOCK, Run, Source, blocks_of, copy_ups, read_runs

SIZE = 4 * COW_BLOCK


def test_reads_merge_neighbouring_blocks_of_one_source() -> None:
    present = bytearray([0, 1, 1, 0])
    assert read_runs(present, 100, SIZE - 200) == [
        Run(Source.BASE, 100, COW_BLOCK - 100),
        Run(Source.OVERLAY, COW_BLOCK, 2 * COW_BLOCK),
        Run(Source.BASE, 3 * COW_BLOCK, COW_BLOCK - 100),
    ]
    assert read_runs(present, 0, 0) == []


def test_only_partly_covered_blocks_missing_from_the_overlay_are_copied_up() -> None:
    assert copy_ups(bytearray(4), 0, 2 * COW_BLOCK) == []
    assert copy_ups(bytearray(4), 512, 2 * COW_BLOCK) == [0, 2]
    assert copy_ups(bytearray([1, 0, 0, 0]), 512, 2 * COW_BLOCK) == [2]
    assert copy_ups(bytearray(4), 512, 512) == [0]


class Model:
    """A copy-on-write disk done with the planning functions over two bytearrays."""

    def __init__(self, base: bytes) -> None:
        self.base = base
        self.overlay = bytearray(len(base))
        self.present = bytearray(len(base) // COW_BLOCK)

    def read(self, offset: int, length: int) -> bytes:
        runs = read_runs(self.present, offset, length)
        assert sum(run.length for run in runs) == length
        return b"".join(
            (self.overlay if run.source is Source.OVERLAY else self.base)[run.offset:run.offset + run.length]
            for run in runs
        )

    def write(self, offset: int, data: bytes) -> None:
        for block in copy_ups(self.present, offset, len(data)):
            start = block * COW_BLOCK
            self.overlay[start:start + COW_BLOCK] = self.base[start:start + COW_BLOCK]
        self.overlay[offset:offset + len(data)] = data
        for block in blocks_of(offset, len(data)):
            self.present[block] = 1


bases = st.integers(0, 2**32).map(lambda seed: random.Random(seed).randbytes(SIZE))
ranges = st.tuples(st.integers(0, SIZE), st.integers(0, SIZE)).map(sorted)


@given(
    base=bases,
    operations=st.lists(st.tuples(st.booleans(), ranges, st.integers(0, 255)), max_size=20),
)
def test_the_map_reads_back_what_a_plain_disk_would(base: bytes, operations: list[tuple[bool, list[int], int]]) -> None:
    disk, model = bytearray(base), Model(base)
    for is_write, (start, end), fill in operations:
        if is_write:
            disk[start:end] = bytes([fill]) * (end - start)
            model.write(start, bytes([fill]) * (end - start))
        else:
            assert model.read(start, end - start) == disk[start:end]
    assert model.read(0, SIZE) == disk
    assert model.base == base
