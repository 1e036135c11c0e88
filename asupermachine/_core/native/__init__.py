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
