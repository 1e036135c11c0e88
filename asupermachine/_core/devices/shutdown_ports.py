"""The ways a guest asks to stop: i8042 reset, and the project's exit-status and power-off ports."""

from __future__ import annotations

from collections.abc import Callable

from ..._outcome import GuestExit, ShutdownReason

ShutdownRequest = Callable[[GuestExit], None]

# Our kernel patch (guest/kernel/patches/0004-exit-ports.patch) writes these.
EXIT_STATUS_PORT = 0xF4
POWER_OFF_PORT = 0xF5
# The i8042 keyboard controller: data port and command/status port.
I8042_DATA_PORT = 0x60
I8042_COMMAND_PORT = 0x64
I8042_CMD_PULSE_RESET = 0xFE


class ExitPorts:
    """Port 0xf4 takes an exit status byte; port 0xf5 any write means power-off."""

    def __init__(self, request: ShutdownRequest) -> None:
        self._request = request

    def read(self, offset: int, size: int) -> int:
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == 0:
            self._request(GuestExit(ShutdownReason.EXIT, value & 0xFF))
        else:
            self._request(GuestExit(ShutdownReason.POWER_OFF))


class I8042:
    """Just enough of the keyboard controller for Linux's ``reboot=k``: a never-busy status and pulse-reset."""

    def __init__(self, request: ShutdownRequest) -> None:
        self._request = request

    def read(self, offset: int, size: int) -> int:
        return 0  # output buffer empty, input buffer empty: never busy

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == I8042_COMMAND_PORT - I8042_DATA_PORT and value & 0xFF == I8042_CMD_PULSE_RESET:
            self._request(GuestExit(ShutdownReason.RESET))
