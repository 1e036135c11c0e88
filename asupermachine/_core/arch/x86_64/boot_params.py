"""The Linux x86 zero page (``struct boot_params``) with e820 map, command line and initrd.

Offsets from Documentation/x86/zero-page.rst and Documentation/x86/boot.rst.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .layout import EBDA_START, HIGH_MEMORY_START

BOOT_PARAMS_SIZE = 0x1000
# zero-page.rst
EXT_RAMDISK_IMAGE = 0x0C0
EXT_RAMDISK_SIZE = 0x0C4
EXT_CMD_LINE_PTR = 0x0C8
E820_ENTRIES = 0x1E8
E820_TABLE = 0x2D0
E820_MAX_ENTRIES_ZEROPAGE = 128
# boot.rst, "THE REAL-MODE KERNEL HEADER"
HDR_BOOT_FLAG = 0x1FE
HDR_HEADER = 0x202
HDR_VERSION = 0x206
HDR_TYPE_OF_LOADER = 0x210
HDR_LOADFLAGS = 0x211
HDR_RAMDISK_IMAGE = 0x218
HDR_RAMDISK_SIZE = 0x21C
HDR_CMD_LINE_PTR = 0x228
HDR_KERNEL_ALIGNMENT = 0x230
HDR_CMDLINE_SIZE = 0x238

BOOT_FLAG_MAGIC = 0xAA55
HEADER_MAGIC = 0x53726448  # "HdrS"
BOOT_PROTOCOL_VERSION = 0x020F
LOADER_TYPE_UNDEFINED = 0xFF
LOADFLAG_LOADED_HIGH = 0x01
KERNEL_ALIGNMENT = 0x0100_0000

E820_RAM = 1
E820_RESERVED = 2


@dataclass(frozen=True)
class E820Entry:
    addr: int
    size: int
    type: int


def e820_map(ram: list[tuple[int, int]]) -> list[E820Entry]:
    """The e820 map for guest RAM regions: low memory below the EBDA, the rest from 1 MiB."""
    entries = [E820Entry(0, EBDA_START, E820_RAM)]
    for gpa, size in ram:
        start = max(gpa, HIGH_MEMORY_START)
        if gpa + size > start:
            entries.append(E820Entry(start, gpa + size - start, E820_RAM))
    return entries


def build_zero_page(
    *,
    cmdline_addr: int,
    cmdline_size: int,
    e820: list[E820Entry],
    initrd_addr: int = 0,
    initrd_size: int = 0,
) -> bytes:
    """``struct boot_params`` for the 64-bit boot protocol; ``cmdline_size`` excludes the NUL."""
    if len(e820) > E820_MAX_ENTRIES_ZEROPAGE:
        raise ValueError(f"{len(e820)} e820 entries exceed the zero page's {E820_MAX_ENTRIES_ZEROPAGE}")
    page = bytearray(BOOT_PARAMS_SIZE)
    struct.pack_into("<H", page, HDR_BOOT_FLAG, BOOT_FLAG_MAGIC)
    struct.pack_into("<I", page, HDR_HEADER, HEADER_MAGIC)
    struct.pack_into("<H", page, HDR_VERSION, BOOT_PROTOCOL_VERSION)
    page[HDR_TYPE_OF_LOADER] = LOADER_TYPE_UNDEFINED
    page[HDR_LOADFLAGS] = LOADFLAG_LOADED_HIGH
    struct.pack_into("<I", page, HDR_KERNEL_ALIGNMENT, KERNEL_ALIGNMENT)
    _pack_split(page, HDR_CMD_LINE_PTR, EXT_CMD_LINE_PTR, cmdline_addr)
    struct.pack_into("<I", page, HDR_CMDLINE_SIZE, cmdline_size)
    _pack_split(page, HDR_RAMDISK_IMAGE, EXT_RAMDISK_IMAGE, initrd_addr)
    _pack_split(page, HDR_RAMDISK_SIZE, EXT_RAMDISK_SIZE, initrd_size)
    page[E820_ENTRIES] = len(e820)
    for i, entry in enumerate(e820):
        struct.pack_into("<QQI", page, E820_TABLE + 20 * i, entry.addr, entry.size, entry.type)
    return bytes(page)


def _pack_split(page: bytearray, low_offset: int, high_offset: int, value: int) -> None:
    """Store a 64-bit value as the header's low 32 bits plus the zero page's ``ext_`` high bits."""
    struct.pack_into("<I", page, low_offset, value & 0xFFFF_FFFF)
    struct.pack_into("<I", page, high_offset, value >> 32)
