"""Allocate C structs that end in a flexible array (``kvm_cpuid2``, ``kvm_msrs``)."""

from __future__ import annotations

from typing import Any

from ._kvm_cffi import ffi


def new_flexible(struct: str, entry: str, count: int) -> tuple[Any, Any]:
    """Zeroed memory for ``struct`` plus ``count`` trailing ``entry`` items.

    Returns ``(owner, pointer)``: keep ``owner`` alive while ``pointer`` is used.
    """
    owner = ffi.new("char[]", ffi.sizeof(struct) + count * ffi.sizeof(entry))
    return owner, ffi.cast(f"{struct} *", owner)
