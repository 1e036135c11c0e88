"""Small C helpers for hot data paths where Python itself is the limit (compiled at install time by cffi)."""

from __future__ import annotations

from ._native_cffi import ffi, lib


def ones_complement_sum(data: bytes | bytearray | memoryview) -> int:
    """The 16-bit ones' complement sum (RFC 1071) of ``data`` as big-endian words, an odd last byte zero-padded.

    A non-zero input whose words sum to a multiple of 0xFFFF gives 0xFFFF, never 0.
    """
    view = memoryview(data).cast("B")
    if not view.nbytes:
        return 0
    return int(lib.amv_ones_complement_sum(ffi.from_buffer(view), view.nbytes))


def nonzero_page_runs(data: bytes | bytearray | memoryview, page_size: int) -> list[tuple[int, int]]:
    """``(offset, length)`` of each maximal run of ``page_size`` pages of ``data`` holding a non-zero byte.

    :raises ValueError: if ``data`` is not a whole number of pages
    """
    view = memoryview(data).cast("B")
    pages, partial = divmod(view.nbytes, page_size)
    if partial or page_size < 2:
        raise ValueError(f"{view.nbytes} bytes are not a whole number of {page_size}-byte pages")
    if not pages:
        return []
    buffer = ffi.from_buffer(view)
    runs = []
    start = lib.amv_next_page(buffer, pages, page_size, 0, 1)
    while start < pages:
        end = lib.amv_next_page(buffer, pages, page_size, start, 0)
        runs.append((start * page_size, (end - start) * page_size))
        start = lib.amv_next_page(buffer, pages, page_size, end, 1)
    return runs
