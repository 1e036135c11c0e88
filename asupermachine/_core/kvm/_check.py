"""Turn the C wrappers' ``-errno`` results into ``OSError``."""

from __future__ import annotations

import os


def check(result: int, what: str) -> int:
    """Return ``result`` if non-negative, else raise ``OSError`` naming the ioctl."""
    if result < 0:
        raise OSError(-result, f"{what}: {os.strerror(-result)}")
    return result
