import struct

import pytest

from asupermachine._core.arch.x86_64 import boot_params as bp
from asupermachine._core.arch.x86_64.boot_params import E820Entry, build_zero_page, e820_map


def test_e820_map_reserves_the_ebda_and_bios_area() -> None:
    entries = e820_map([(0, 256 << 20)])
    assert entries == [
        E820Entry(0, 0x9FC00, bp.E820_RAM),
        E820Entry(0x100000, (256 << 20) - 0x100000, bp.E820_RAM),
    ]


def test_e820_map_covers_ram_above_the_mmio_gap() -> None:
    entries = e820_map([(0, 0xC000_0000), (1 << 32, 1 << 30)])
    assert entries[-1] == E820Entry(1 << 32, 1 << 30, bp.E820_RAM)


def test_zero_page_carries_header_magic_cmdline_initrd_and_e820() -> None:
    e820 = e820_map([(0, 128 << 20)])
    page = build_zero_page(cmdline_addr=0x20000, cmdline_size=11, e820=e820, initrd_addr=0x7F00000, initrd_size=4096)
    assert len(page) == 4096
    assert struct.unpack_from("<H", page, 0x1FE)[0] == 0xAA55
    assert page[0x202:0x206] == b"HdrS"
    assert page[0x210] == 0xFF  # loader type: undefined
    assert struct.unpack_from("<I", page, 0x228)[0] == 0x20000
    assert struct.unpack_from("<I", page, 0x238)[0] == 11
    assert struct.unpack_from("<II", page, 0x218) == (0x7F00000, 4096)
    assert page[0x1E8] == len(e820)
    assert struct.unpack_from("<QQI", page, 0x2D0 + 20) == (0x100000, (128 << 20) - 0x100000, 1)


def test_zero_page_splits_addresses_above_4gib_into_ext_fields() -> None:
    page = build_zero_page(cmdline_addr=0x1_2345_6000, cmdline_size=1, e820=[])
    assert struct.unpack_from("<I", page, 0x228)[0] == 0x2345_6000
    assert struct.unpack_from("<I", page, 0x0C8)[0] == 0x1


def test_zero_page_refuses_more_e820_entries_than_fit() -> None:
    with pytest.raises(ValueError):
        build_zero_page(cmdline_addr=0, cmdline_size=0, e820=[E820Entry(0, 4096, 1)] * 129)
