"""How things end: a machine (:class:`CloseReason`), its guest (:class:`GuestExit`), a process (:class:`ExitStatus`)."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ShutdownReason(enum.Enum):
    """Why a VM stopped."""

    EXIT = "exit"
    """The guest's init reported its command's exit status."""
    POWER_OFF = "power-off"
    RESET = "reset"
    """The guest rebooted (i8042 reset line or a KVM reset event)."""
    PANIC = "panic"
    TRIPLE_FAULT = "triple-fault"
    HOST = "host"
    """The host stopped the VM (close, timeout, cancellation)."""


class CloseReason(enum.StrEnum):
    """Why a machine closed (:attr:`Machine.close_reason`, :attr:`MachineClosed.reason`)."""

    CLOSED = "closed"
    """:meth:`Machine.close` (or leaving its ``async with``)."""
    TIMEOUT = "timeout"
    """Its ``timeout`` ran out."""
    RUNTIME = "runtime"
    """Its :class:`Runtime` closed."""
    PAUSED = "paused"
    """:meth:`Machine.pause` saved it; :meth:`Runtime.resume` brings it back."""
    STOPPED = "stopped"
    """The guest ended by itself (see :meth:`Machine.wait`)."""


@dataclass(frozen=True)
class GuestExit:
    """How a VM ended: the reason and, for :attr:`ShutdownReason.EXIT`, the exit code (0..255)."""

    reason: ShutdownReason
    exit_code: int | None = None


@dataclass(frozen=True)
class ExitStatus:
    """``exit_code`` if the process exited, ``signal`` if a signal killed it."""

    exit_code: int | None
    signal: int | None

    @property
    def returncode(self) -> int:
        """As subprocess and anyio give it: the exit code, or minus the signal that killed the process."""
        return self.exit_code if self.exit_code is not None else -(self.signal or 0)

    def __str__(self) -> str:
        return f"exit {self.exit_code}" if self.exit_code is not None else f"signal {self.signal}"


@dataclass(frozen=True)
class ExecResult:
    """A finished command: how it ended and everything it wrote."""

    status: ExitStatus
    stdout: bytes
    stderr: bytes

    @property
    def exit_code(self) -> int | None:
        """The exit code if the command exited, else None (see :attr:`signal`)."""
        return self.status.exit_code

    @property
    def signal(self) -> int | None:
        """The signal that killed the command, else None."""
        return self.status.signal
