import pytest

from asupermachine._core.devices.bus import Bus
from asupermachine._core.devices.shutdown_ports import (
    EXIT_STATUS_PORT,
    I8042,
    I8042_DATA_PORT,
    POWER_OFF_PORT,
    ExitPorts,
    GuestExit,
    ShutdownReason,
)


class Register:
    def __init__(self) -> None:
        self.writes: list[tuple[int, int, int]] = []

    def read(self, offset: int, size: int) -> int:
        return offset + size * 0x100

    def write(self, offset: int, size: int, value: int) -> None:
        self.writes.append((offset, size, value))


def test_accesses_route_to_the_owner_by_offset() -> None:
    bus, a, b = Bus(), Register(), Register()
    bus.register(0x100, 8, a)
    bus.register(0x200, 4, b)
    assert bus.read(0x103, 1) == 0x103 - 0x100 + 0x100
    bus.write(0x202, 2, 0xBEEF)
    assert b.writes == [(2, 2, 0xBEEF)] and a.writes == []


def test_unclaimed_and_straddling_accesses_float_high_and_are_ignored() -> None:
    bus, a = Bus(), Register()
    bus.register(0x100, 4, a)
    assert bus.read(0x50, 2) == 0xFFFF
    assert bus.read(0x103, 4) == 0xFFFF_FFFF  # runs past the device's end
    bus.write(0x103, 4, 1)
    assert a.writes == []


def test_overlapping_registrations_are_refused() -> None:
    bus = Bus()
    bus.register(0x100, 8, Register())
    for base, length in [(0x104, 8), (0xFC, 8), (0x100, 1)]:
        with pytest.raises(ValueError):
            bus.register(base, length, Register())


def test_exit_ports_report_status_and_power_off() -> None:
    seen: list[GuestExit] = []
    bus = Bus()
    bus.register(EXIT_STATUS_PORT, 2, ExitPorts(seen.append))
    bus.write(EXIT_STATUS_PORT, 1, 42)
    bus.write(POWER_OFF_PORT, 1, 0)
    assert seen == [GuestExit(ShutdownReason.EXIT, 42), GuestExit(ShutdownReason.POWER_OFF)]


def test_i8042_is_never_busy_and_resets_on_pulse_command() -> None:
    seen: list[GuestExit] = []
    bus = Bus()
    bus.register(I8042_DATA_PORT, 5, I8042(seen.append))
    assert bus.read(0x64, 1) == 0
    bus.write(0x64, 1, 0xAE)
    assert seen == []
    bus.write(0x64, 1, 0xFE)
    assert seen == [GuestExit(ShutdownReason.RESET)]
