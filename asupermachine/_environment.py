"""The environment a guest command starts with: the default ``PATH``, and what may name a variable."""

from __future__ import annotations

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""Docker's default, and the guest's (``SPAWN_DEFAULT_PATH`` in guest/include/spawn_process.h)."""


def check_environment_name(name: str) -> None:
    """Raise ``ValueError`` unless ``name`` can stand before the ``=`` of a ``NAME=value`` entry."""
    if not name or "=" in name:
        raise ValueError(f"environment name {name!r} is empty or contains '='")
