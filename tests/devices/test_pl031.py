"""The PL031 RTC's registers, against the TRM's map and the identification Linux's AMBA bus matches."""

from __future__ import annotations

from asupermachine._core.devices.pl031 import CONTROL, DATA, INTERRUPT_MASK, LOAD, MATCH, RAW_INTERRUPT, Pl031


class Clock:
    def __init__(self) -> None:
        self.now = 1_796_600_000.7

    def __call__(self) -> float:
        return self.now


def test_the_counter_is_the_hosts_wall_clock_in_whole_seconds() -> None:
    clock = Clock()
    rtc = Pl031(clock)
    assert rtc.read(DATA, 4) == 1_796_600_000
    clock.now += 61
    assert rtc.read(DATA, 4) == 1_796_600_061
    assert rtc.read(CONTROL, 4) == 1


def test_a_load_sets_the_counter_which_then_runs_on() -> None:
    clock = Clock()
    rtc = Pl031(clock)
    rtc.write(LOAD, 4, 1_000)
    clock.now += 5
    assert (rtc.read(DATA, 4), rtc.read(LOAD, 4)) == (1_005, 1_000)


def test_the_amba_bus_reads_a_pl031_by_arm() -> None:
    rtc = Pl031(Clock())
    peripheral = sum(rtc.read(0xFE0 + 4 * i, 4) << (8 * i) for i in range(4))
    primecell = sum(rtc.read(0xFF0 + 4 * i, 4) << (8 * i) for i in range(4))
    # rtc-pl031's amba_id: 0x00041031 under the mask 0x000fffff (the revision, bits 20-23, is free)
    assert (peripheral & 0x000F_FFFF, primecell) == (0x0004_1031, 0xB105_F00D)


def test_alarms_are_kept_but_never_raised() -> None:
    rtc = Pl031(Clock())
    rtc.write(MATCH, 4, 1_796_600_001)
    rtc.write(INTERRUPT_MASK, 4, 0xFF)
    assert (rtc.read(MATCH, 4), rtc.read(INTERRUPT_MASK, 4), rtc.read(RAW_INTERRUPT, 4)) == (1_796_600_001, 1, 0)
    assert rtc.read(0x800, 4) == 0  # a hole in the map
