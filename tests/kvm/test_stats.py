"""KVM's binary statistics: the format reader against blocks laid out as the kernel documents, and a real VM's."""

from __future__ import annotations

import struct

import pytest

from asupermachine._core.kvm import Kvm
from asupermachine._core.kvm.stats import (
    DESCRIPTOR,
    HEADER,
    KvmStats,
    StatsFormatError,
    StatsLayout,
    descriptor_table_span,
    summed,
)

NAME_SIZE = 48
CUMULATIVE, INSTANT, LINEAR_HIST = 0x0, 0x1, 0x3


def stats_block(stats: list[tuple[str, int, list[int]]]) -> bytes:
    """A whole stats fd's content: header, an id string, descriptors, data (``(name, type, values)``)."""
    desc_offset = HEADER.size + NAME_SIZE
    count = len(stats)
    data_offset = desc_offset + count * (DESCRIPTOR.size + NAME_SIZE)
    descriptors, data = b"", b""
    for name, kind, values in stats:
        descriptors += DESCRIPTOR.pack(kind, 0, len(values), len(data), 0) + name.encode().ljust(NAME_SIZE, b"\0")
        data += struct.pack(f"<{len(values)}Q", *values)
    header = HEADER.pack(0, NAME_SIZE, count, HEADER.size, desc_offset, data_offset)
    return header + b"kvm-1234/vcpu0".ljust(NAME_SIZE, b"\0") + descriptors + data


def parse(block: bytes) -> tuple[StatsLayout, bytes]:
    offset, length = descriptor_table_span(block[: HEADER.size])
    layout = StatsLayout.parse(block[: HEADER.size], block[offset : offset + length])
    return layout, block[layout.data_offset :]


def test_cumulative_counters_are_read_and_instants_and_histograms_skipped() -> None:
    block = stats_block([
        ("exits", CUMULATIVE, [1234]),
        ("halt_poll_success_hist", LINEAR_HIST, [1, 2, 3, 4]),
        ("guest_mode", INSTANT, [1]),
        ("mmio_exits", CUMULATIVE, [56]),
    ])
    layout, data = parse(block)
    assert layout.values(data) == {"exits": 1234, "mmio_exits": 56}


def test_a_short_data_block_or_descriptor_table_is_refused() -> None:
    layout, data = parse(stats_block([("exits", CUMULATIVE, [1]), ("io_exits", CUMULATIVE, [2])]))
    with pytest.raises(StatsFormatError):
        layout.values(data[:-1])
    block = stats_block([("exits", CUMULATIVE, [1])])
    with pytest.raises(StatsFormatError):
        StatsLayout.parse(block[: HEADER.size], b"\0" * 10)


def test_an_absurd_header_is_refused() -> None:
    with pytest.raises(StatsFormatError):
        descriptor_table_span(HEADER.pack(0, 0, 5, 0, 24, 100))  # names of no bytes
    with pytest.raises(StatsFormatError):
        descriptor_table_span(HEADER.pack(0, 48, 1 << 20, 0, 24, 100))
    with pytest.raises(StatsFormatError):
        descriptor_table_span(b"\0" * 8)


def test_readings_are_summed_by_name() -> None:
    assert summed([{"exits": 2, "io_exits": 1}, {"exits": 3}]) == {"exits": 5, "io_exits": 1}


@pytest.mark.kvm
def test_a_fresh_vm_and_vcpu_report_kvm_counters() -> None:
    with Kvm() as kvm:
        vm = kvm.create_vm()
        try:
            vcpu = vm.create_vcpu(0)
            try:
                vcpu_stats, vm_stats = KvmStats(vcpu.fd), KvmStats(vm.fd)
                try:
                    counters = vcpu_stats.read()
                    assert counters["exits"] == 0
                    assert {"io_exits", "mmio_exits", "halt_exits"} <= counters.keys()
                    assert isinstance(vm_stats.read(), dict)
                finally:
                    vcpu_stats.close()
                    vm_stats.close()
            finally:
                vcpu.close()
        finally:
            vm.close()
