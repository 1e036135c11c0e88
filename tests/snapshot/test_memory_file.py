"""The sparse memory file: only non-zero pages are stored, and any change to the file is caught."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from asupermachine import SnapshotError
from asupermachine.snapshot.memory_file import PAGE, SCAN_CHUNK, nonzero_extents, verify_memory, write_memory

SIZE = 4 * SCAN_CHUNK


def guest_ram() -> bytearray:
    ram = bytearray(SIZE)
    ram[PAGE + 7] = 1  # page 1
    ram[2 * PAGE] = 2  # page 2, adjacent: merged
    ram[SCAN_CHUNK + 5 * PAGE : SCAN_CHUNK + 5 * PAGE + 10] = b"x" * 10
    ram[-1] = 3  # the last page
    return ram


def test_extents_are_the_nonzero_pages_merged() -> None:
    assert nonzero_extents(memoryview(guest_ram())) == [
        (PAGE, 2 * PAGE), (SCAN_CHUNK + 5 * PAGE, PAGE), (SIZE - PAGE, PAGE)
    ]


def test_written_file_is_sparse_and_verifies(tmp_path: Path) -> None:
    ram = guest_ram()
    image = write_memory(memoryview(ram), tmp_path / "memory")
    assert (tmp_path / "memory").read_bytes() == ram
    assert os.stat(tmp_path / "memory").st_blocks * 512 < SIZE // 4  # holes where RAM was zero
    verify_memory(tmp_path / "memory", image)


@pytest.mark.parametrize("offset", [PAGE + 7, 3 * PAGE + 1, SIZE - 1])
def test_any_changed_byte_is_caught(tmp_path: Path, offset: int) -> None:
    image = write_memory(memoryview(guest_ram()), tmp_path / "memory")
    with (tmp_path / "memory").open("r+b") as f:
        f.seek(offset)
        f.write(b"\x55")
    with pytest.raises(SnapshotError) as refused:
        verify_memory(tmp_path / "memory", image)
    assert refused.value.check == "memory"
