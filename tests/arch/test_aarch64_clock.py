"""arm64's restored counter and idle rule: pure arithmetic, checked against hand-worked values."""

from __future__ import annotations

from asupermachine._core.arch.aarch64.clock import TIMER_COUNT, counter_advanced, waited_through

PC = 0x6030_0000_0010_0040  # a core register's id, which the advance leaves alone


def test_the_timer_count_id_is_the_uapis() -> None:
    # arch/arm64/include/uapi/asm/kvm.h: KVM_REG_ARM_TIMER_CNT = ARM64_SYS_REG(3, 3, 14, 3, 2)
    assert TIMER_COUNT == 0x6030_0000_0013_DF1A


def test_the_counter_moves_on_by_the_snapshots_age_at_the_counters_frequency() -> None:
    saved = {TIMER_COUNT: (1_000).to_bytes(8, "little"), PC: b"\x01" * 8}
    moved = counter_advanced(saved, elapsed_ns=2_500_000_000, frequency_hz=62_500_000)
    assert int.from_bytes(moved[TIMER_COUNT], "little") == 1_000 + 156_250_000
    assert moved[PC] == saved[PC] and saved[TIMER_COUNT] == (1_000).to_bytes(8, "little")


def test_a_clock_that_went_back_leaves_the_counter_where_it_was() -> None:
    saved = {TIMER_COUNT: (7).to_bytes(8, "little")}
    assert counter_advanced(saved, elapsed_ns=-5_000_000_000, frequency_hz=1_000_000_000) == saved


def test_registers_without_a_counter_are_unchanged() -> None:
    assert counter_advanced({PC: bytes(8)}, elapsed_ns=10**9, frequency_hz=10**9) == {PC: bytes(8)}


def test_idle_means_every_vcpu_waited_through_most_of_the_time_it_ran() -> None:
    assert waited_through(waited_ns=9_000_000, ran_ns=5_000_000, vcpus=2)
    assert not waited_through(waited_ns=5_000_000, ran_ns=5_000_000, vcpus=2)  # one vCPU ran throughout
    assert not waited_through(waited_ns=0, ran_ns=0, vcpus=1)  # the first look: nothing to go by
