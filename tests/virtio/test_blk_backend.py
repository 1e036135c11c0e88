"""The overlay backend reads and writes as a plain disk would, never changes its base, and freezes its merged view."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asupermachine._core.virtio.blk_backend import Overlay
from asupermachine._core.virtio.blk_cow import COW_BLOCK

SIZE = 4 * COW_BLOCK
BASE = random.Random(0).randbytes(SIZE)


@pytest.fixture
def base(tmp_path: Path) -> Iterator[int]:
    (tmp_path / "base.img").write_bytes(BASE)
    fd = os.open(tmp_path / "base.img", os.O_RDONLY)
    yield fd
    os.close(fd)


def scattered(data: bytes, cut: int) -> list[memoryview]:
    """``data`` as two buffers, as a guest's request spans pages."""
    cut = min(cut, len(data))
    return [memoryview(bytearray(data[:cut])), memoryview(bytearray(data[cut:]))]


ranges = st.tuples(st.integers(0, SIZE // 512), st.integers(0, SIZE // 512)).map(lambda r: [512 * x for x in sorted(r)])


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=50)
@given(operations=st.lists(st.tuples(st.booleans(), ranges, st.integers(0, 255), st.integers(0, SIZE)), max_size=12))
def test_an_overlay_reads_back_what_a_plain_disk_would(
    base: int, tmp_path: Path, operations: list[tuple[bool, list[int], int, int]]
) -> None:
    disk = bytearray(BASE)
    overlay = Overlay(base, SIZE, tmp_path)
    try:
        for is_write, (start, end), fill, cut in operations:
            if is_write:
                disk[start:end] = bytes([fill]) * (end - start)
                assert overlay.write(scattered(bytes([fill]) * (end - start), cut), start) == end - start
            else:
                views = scattered(bytes(end - start), cut)
                assert overlay.read(views, start) == end - start
                assert b"".join(map(bytes, views)) == disk[start:end]
        frozen = os.open(tmp_path, os.O_TMPFILE | os.O_RDWR)
        try:
            overlay.freeze(frozen)
            assert os.pread(frozen, SIZE + 1, 0) == disk
        finally:
            os.close(frozen)
    finally:
        overlay.close()
    assert os.pread(base, SIZE + 1, 0) == BASE


def test_an_overlay_leaves_no_file_behind(base: int, tmp_path: Path) -> None:
    overlay = Overlay(base, SIZE, tmp_path)
    overlay.write([memoryview(b"x" * 512)], 512)
    overlay.close()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["base.img"]
