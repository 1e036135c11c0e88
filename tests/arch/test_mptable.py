import struct

import pytest

from asupermachine._core.arch.x86_64.mptable import IOAPIC_PINS, mptable


def _entries(table: bytes, count: int) -> list[bytes]:
    entries, offset = [], 16 + 44
    sizes = {0: 20, 1: 8, 2: 8, 3: 8, 4: 8}
    for _ in range(count):
        size = sizes[table[offset]]
        entries.append(table[offset : offset + size])
        offset += size
    return entries


@pytest.mark.parametrize("vcpus", [1, 2, 8])
def test_mptable_checksums_and_points_at_its_config_table(vcpus: int) -> None:
    table = mptable(0x9FC00, vcpus)
    assert table[:4] == b"_MP_" and sum(table[:16]) % 256 == 0
    assert struct.unpack_from("<I", table, 4)[0] == 0x9FC00 + 16
    length = struct.unpack_from("<H", table, 16 + 4)[0]
    assert table[16:20] == b"PCMP" and length == len(table) - 16
    assert sum(table[16:]) % 256 == 0


def test_mptable_lists_each_cpu_with_the_first_as_boot_processor() -> None:
    table = mptable(0x9FC00, 3)
    count = struct.unpack_from("<H", table, 16 + 34)[0]
    entries = _entries(table, count)
    cpus = [e for e in entries if e[0] == 0]
    assert [(c[1], c[3]) for c in cpus] == [(0, 3), (1, 1), (2, 1)]
    ioapics = [e for e in entries if e[0] == 2]
    assert len(ioapics) == 1 and ioapics[0][1] == 4
    assert len([e for e in entries if e[0] == 3]) == IOAPIC_PINS


def test_mptable_refuses_impossible_cpu_counts() -> None:
    with pytest.raises(ValueError):
        mptable(0, 0)
    with pytest.raises(ValueError):
        mptable(0, 255)
