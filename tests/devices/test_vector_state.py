import struct

from asupermachine._core.devices.vector_state import (
    XSAVE_EXTENDED_OFFSET,
    XSAVE_HEADER_OFFSET,
    XSTATE_BV,
    TaskVectorStates,
)

XSAVE_SIZE = 4096
AVX_UPPER = slice(XSAVE_EXTENDED_OFFSET, XSAVE_EXTENDED_OFFSET + 256)


def xsave(legacy: int, features: int, avx_upper: int) -> bytes:
    """A KVM XSAVE area: legacy region filled with ``legacy``, XSTATE_BV, ymm upper halves filled."""
    area = bytearray(XSAVE_SIZE)
    area[:XSAVE_HEADER_OFFSET] = bytes([legacy]) * XSAVE_HEADER_OFFSET
    XSTATE_BV.pack_into(area, XSAVE_HEADER_OFFSET, features)
    area[AVX_UPPER] = bytes([avx_upper]) * 256
    return bytes(area)


def test_load_gives_a_task_its_own_extended_state_and_keeps_the_kernels_legacy_region() -> None:
    states = TaskVectorStates()
    states.save(10, xsave(legacy=0xAA, features=0b111, avx_upper=0x10))
    loaded = states.load(10, xsave(legacy=0xBB, features=0b011, avx_upper=0x20))
    assert loaded[:XSAVE_HEADER_OFFSET] == bytes([0xBB]) * XSAVE_HEADER_OFFSET
    assert loaded[AVX_UPPER] == bytes([0x10]) * 256
    assert XSTATE_BV.unpack_from(loaded, XSAVE_HEADER_OFFSET)[0] == 0b111


def test_a_task_with_no_saved_state_starts_from_the_init_state() -> None:
    loaded = TaskVectorStates().load(7, xsave(legacy=0xBB, features=0b111, avx_upper=0x20))
    assert loaded[:XSAVE_HEADER_OFFSET] == bytes([0xBB]) * XSAVE_HEADER_OFFSET
    assert XSTATE_BV.unpack_from(loaded, XSAVE_HEADER_OFFSET)[0] == 0b011
    assert loaded[XSAVE_HEADER_OFFSET + 8 :] == bytes(XSAVE_SIZE - XSAVE_HEADER_OFFSET - 8)


def test_the_legacy_features_bits_always_come_from_the_registers() -> None:
    states = TaskVectorStates()
    states.save(3, xsave(legacy=1, features=0b100, avx_upper=5))
    loaded = states.load(3, xsave(legacy=2, features=0b011, avx_upper=6))
    assert struct.unpack_from("<Q", loaded, XSAVE_HEADER_OFFSET)[0] == 0b111


def test_a_dropped_task_forgets_its_state() -> None:
    states = TaskVectorStates()
    states.save(5, xsave(legacy=1, features=0b111, avx_upper=9))
    states.drop(5)
    states.drop(6)  # never saved: nothing happens
    assert states.state() == {}
    assert states.load(5, xsave(legacy=1, features=0b111, avx_upper=1))[AVX_UPPER] == bytes(256)


def test_at_most_capacity_tasks_are_kept_the_least_recently_saved_forgotten_first() -> None:
    states = TaskVectorStates(capacity=2)
    for pid in (1, 2, 1, 3):
        states.save(pid, xsave(legacy=0, features=0b111, avx_upper=pid))
    assert list(states.state()) == [1, 3]


def test_state_round_trips_for_snapshots() -> None:
    states = TaskVectorStates()
    states.save(42, xsave(legacy=0, features=0b111, avx_upper=0x42))
    restored = TaskVectorStates(states.state())
    assert restored.load(42, xsave(legacy=0, features=0b011, avx_upper=0))[AVX_UPPER] == bytes([0x42]) * 256
