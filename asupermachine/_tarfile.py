"""Unpacking a trusted source tarball (the guest kernel's, passt's) with tarfile's ``data`` filter, on every
Python the project runs on: the filter came in 3.11.4, and Debian 12's Python is 3.11.2."""

from __future__ import annotations

import tarfile
from pathlib import Path, PurePosixPath


def extract_data(tar: tarfile.TarFile, destination: Path) -> None:
    """Unpack ``tar`` into ``destination`` as the ``data`` filter does: no member or link out of it, no
    devices; where Python lacks the filter, such a member is refused by hand before anything is written.

    :raises tarfile.TarError: for a member the filter refuses.
    """
    if hasattr(tarfile, "data_filter"):
        tar.extractall(destination, filter="data")
        return
    for member in tar.getmembers():
        _check(member)
    tar.extractall(destination)  # noqa: S202 - every member was checked above


def _check(member: tarfile.TarInfo) -> None:
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts:
        raise tarfile.TarError(f"{member.name!r} would be written outside the destination")
    if member.isdev():
        raise tarfile.TarError(f"{member.name!r} is a device")
    if member.issym() or member.islnk():
        target = PurePosixPath(member.linkname)
        base = name.parent if member.issym() else PurePosixPath()
        if target.is_absolute() or _escapes(base / target):
            raise tarfile.TarError(f"{member.name!r} links to {member.linkname!r}, outside the destination")


def _escapes(path: PurePosixPath) -> bool:
    depth = 0
    for part in path.parts:
        depth += -1 if part == ".." else 0 if part == "." else 1
        if depth < 0:
            return True
    return False
