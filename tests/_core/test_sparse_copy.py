"""Sparse copies hold the same bytes and keep holes holes."""

from __future__ import annotations

import os
from pathlib import Path

from asupermachine._core.sparse_copy import clone_or_copy, data_extents

MIB = 1 << 20


def test_a_copy_keeps_the_data_and_the_holes(tmp_path: Path) -> None:
    source = tmp_path / "source.img"
    with source.open("wb") as f:
        f.truncate(64 * MIB)
        for offset in (0, 10 * MIB, 64 * MIB - 4096):
            f.seek(offset)
            f.write(os.urandom(4096))
    target = tmp_path / "target.img"
    with source.open("rb") as src, target.open("xb") as dst:
        clone_or_copy(src.fileno(), dst.fileno())
        assert data_extents(dst.fileno(), 64 * MIB) == data_extents(src.fileno(), 64 * MIB)
    assert target.read_bytes() == source.read_bytes()
    assert os.stat(target).st_blocks * 512 <= 3 * 4096 * 16  # the data, not 64 MiB


def test_an_empty_file_copies_as_all_hole(tmp_path: Path) -> None:
    source = tmp_path / "source.img"
    source.write_bytes(b"")
    os.truncate(source, 8 * MIB)
    target = tmp_path / "target.img"
    with source.open("rb") as src, target.open("xb") as dst:
        clone_or_copy(src.fileno(), dst.fileno())
    assert os.stat(target).st_size == 8 * MIB and os.stat(target).st_blocks == 0
