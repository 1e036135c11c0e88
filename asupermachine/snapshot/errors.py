"""Why a snapshot was refused."""

from __future__ import annotations

from .._errors import AsupermachineError


class SnapshotError(AsupermachineError):
    """A snapshot cannot be taken, loaded or restored; ``check`` names what failed."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(f"snapshot refused ({check}): {message}")
        self.check = check
