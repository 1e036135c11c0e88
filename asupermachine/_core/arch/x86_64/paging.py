"""Identity-mapped boot page tables: enough for ``startup_64`` to run before it builds its own."""

from __future__ import annotations

import struct

from .layout import PD_ADDR, PDPT_ADDR, PML4_ADDR

PTE_PRESENT = 1 << 0
PTE_WRITABLE = 1 << 1
PTE_PAGE_SIZE = 1 << 7
_TWO_MIB = 2 << 20
_ENTRIES = 512


def identity_page_tables() -> dict[int, bytes]:
    """Page-table pages by guest-physical address, mapping the first 1 GiB with 2 MiB pages.

    The kernel image, zero page and command line all sit in that first GiB;
    ``startup_64`` maps everything else itself.
    """
    pml4 = struct.pack("<Q", PDPT_ADDR | PTE_PRESENT | PTE_WRITABLE).ljust(4096, b"\0")
    pdpt = struct.pack("<Q", PD_ADDR | PTE_PRESENT | PTE_WRITABLE).ljust(4096, b"\0")
    pd = b"".join(
        struct.pack("<Q", (i * _TWO_MIB) | PTE_PRESENT | PTE_WRITABLE | PTE_PAGE_SIZE) for i in range(_ENTRIES)
    )
    return {PML4_ADDR: pml4, PDPT_ADDR: pdpt, PD_ADDR: pd}
