import struct

from asupermachine._core.arch.x86_64 import layout
from asupermachine._core.arch.x86_64.gdt import boot_segments, gdt_bytes, gdt_entry
from asupermachine._core.arch.x86_64.paging import identity_page_tables


def test_page_tables_identity_map_the_first_gib_with_2mib_pages() -> None:
    tables = identity_page_tables()
    pml4 = struct.unpack_from("<Q", tables[layout.PML4_ADDR])[0]
    pdpt = struct.unpack_from("<Q", tables[layout.PDPT_ADDR])[0]
    assert pml4 & ~0xFFF == layout.PDPT_ADDR and pml4 & 0b11 == 0b11
    assert pdpt & ~0xFFF == layout.PD_ADDR
    pd = tables[layout.PD_ADDR]
    entries = struct.unpack("<512Q", pd)
    assert entries[0] == 0x83
    assert entries[511] == (511 << 21) | 0x83
    assert all(len(page) == 4096 for page in tables.values())


def test_gdt_entry_encoding_matches_known_values() -> None:
    # The flat 64-bit code segment every x86_64 loader uses.
    assert gdt_entry(0xA09B, 0, 0xFFFFF) == 0x00AF9B000000FFFF
    assert gdt_entry(0xC093, 0, 0xFFFFF) == 0x00CF93000000FFFF
    assert len(gdt_bytes()) == 4 * 8


def test_boot_segments_are_long_mode_code_and_flat_data() -> None:
    code, data, tss = boot_segments()
    assert (code.selector, code.l, code.db, code.type, code.present) == (8, 1, 0, 0xB, 1)
    assert (data.selector, data.db, data.type, data.limit) == (16, 1, 0x3, 0xFFFFFFFF)
    assert (tss.selector, tss.type, tss.s) == (24, 0xB, 0)
