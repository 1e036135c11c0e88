"""Paths resolved inside a directory as if it were ``/``: how docker reads COPY's sources and destinations.

A symlink on the way is followed, an absolute one from the scope's root, and
``..`` stops at that root, so no path leaves the scope (the context or an
image's tree). What the final component is (a symlink too) is the caller's
choice.
"""

from __future__ import annotations

import os
import posixpath
import stat
from pathlib import Path

from .._errors import BuildError

MAX_SYMLINKS = 40
"""Symlinks followed in one path before giving up, as Linux's ``ELOOP``."""


def scoped_parts(path: str) -> list[str]:
    """``path``'s components, ``..`` taken lexically and never above the root."""
    parts: list[str] = []
    for part in path.split("/"):
        if part == "..":
            if parts:
                parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    return parts


def resolve_in(root: Path, path: str, *, follow_last: bool = True) -> Path:
    """``path`` inside ``root``, its symlinks followed within ``root`` (the last only if ``follow_last``)."""
    pending = scoped_parts(path)
    resolved: list[str] = []
    hops = 0
    while pending:
        part = pending.pop(0)
        candidate = root.joinpath(*resolved, part)
        if (pending or follow_last) and _is_symlink(candidate):
            hops += 1
            if hops > MAX_SYMLINKS:
                raise BuildError(f"{path!r}: too many levels of symbolic links")
            target = os.readlink(candidate)
            pending = scoped_parts(target) + pending if target.startswith("/") else [
                *scoped_parts(posixpath.join(*resolved, target) if resolved else target), *pending]
            resolved = []
            continue
        resolved.append(part)
    return root.joinpath(*resolved)


def _is_symlink(path: Path) -> bool:
    try:
        return stat.S_ISLNK(path.lstat().st_mode)
    except FileNotFoundError:
        return False

