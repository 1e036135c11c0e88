"""The sparse memory file: only non-zero pages are stored, and any change to the file is caught."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asupermachine import SnapshotError
from asupermachine.snapshot.memory_file import PAGE, nonzero_extents, verify_memory, write_memory

SCAN_CHUNK = 64 * PAGE  # any span of pages: the second non-zero run starts in it
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


@given(st.lists(st.integers(0, 63), max_size=20), st.sampled_from([0, 1, PAGE - 1]))
def test_extents_match_a_page_by_page_reading(pages: list[int], at: int) -> None:
    ram = bytearray(64 * PAGE)
    for page in pages:
        ram[page * PAGE + at] = 0xFF
    expected: list[tuple[int, int]] = []
    for page in range(64):
        if any(ram[page * PAGE : (page + 1) * PAGE]):
            if expected and sum(expected[-1]) == page * PAGE:
                expected[-1] = (expected[-1][0], expected[-1][1] + PAGE)
            else:
                expected.append((page * PAGE, PAGE))
    assert nonzero_extents(memoryview(ram)) == expected


def test_memory_that_is_not_whole_pages_is_refused() -> None:
    with pytest.raises(ValueError, match="whole number"):
        nonzero_extents(memoryview(bytearray(PAGE + 1)))
