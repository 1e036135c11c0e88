"""Write tar entries inside a directory tree without ever leaving it.

Every filesystem call is relative to a directory fd reached from the tree's root
one component at a time with ``O_NOFOLLOW``: no path from an archive is ever
resolved by the host kernel from ``/``, and no symlink in the tree is followed
(going through one fails with ``ELOOP`` or ``ENOTDIR``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tarfile
from collections.abc import Iterator

from ..image.store import COPY_CHUNK

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

Components = tuple[str, ...]


def entry_path(name: str) -> Components:
    """A member name as path components inside the tree; raises ``ValueError`` if it could leave it."""
    if name.startswith("/"):
        raise ValueError("absolute path")
    parts = tuple(part for part in name.split("/") if part not in ("", "."))
    if ".." in parts:
        raise ValueError("'..' component")
    if any("\0" in part for part in parts):
        raise ValueError("NUL in path")
    return parts


def symlink_stays_inside(link: Components, target: str) -> bool:
    """Whether a relative symlink at ``link`` resolves (lexically) inside the tree; absolute ones always do."""
    if target.startswith("/"):
        return True
    depth = len(link) - 1
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return False
        elif part not in ("", "."):
            depth += 1
    return True


class RootedTree:
    """The directory ``root`` (the caller's own path, so followed if a symlink), and fds inside it."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self._root = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        if self._root >= 0:
            os.close(self._root)
            self._root = -1

    def __enter__(self) -> RootedTree:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @contextlib.contextmanager
    def parent(self, path: Components, *, create: bool = True) -> Iterator[int]:
        """An fd of the directory that holds ``path`` (see :meth:`directory`)."""
        with self.directory(path[:-1], create=create) as fd:
            yield fd

    @contextlib.contextmanager
    def directory(self, path: Components, *, create: bool = True) -> Iterator[int]:
        """An fd of the tree's directory ``path``, reached without following any symlink; with ``create``,
        missing directories on the way are made (mode 0755)."""
        fd = os.dup(self._root)
        try:
            for part in path:
                try:
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(part, 0o755, dir_fd=fd)
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
            yield fd
        finally:
            os.close(fd)


def is_directory(parent: int, name: str) -> bool:
    try:
        return stat.S_ISDIR(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False


def remove(parent: int, name: str) -> None:
    """Remove ``name`` in ``parent`` (a whole tree for a directory), never following symlinks."""
    try:
        if is_directory(parent, name):
            shutil.rmtree(name, dir_fd=parent)
        else:
            os.unlink(name, dir_fd=parent)
    except FileNotFoundError:
        pass


def write_regular(tar: tarfile.TarFile, member: tarfile.TarInfo, parent: int, name: str) -> None:
    """Create ``name`` in ``parent`` (absent: see :func:`remove`) with the data of ``member``, mode 0600.

    Raises ``tarfile.ReadError`` if the archive ends inside the data.
    """
    source = tar.extractfile(member)
    assert source is not None
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with os.fdopen(os.open(name, flags, 0o600, dir_fd=parent), "wb") as target:
        shutil.copyfileobj(source, target, COPY_CHUNK)


def mtime_ns(member: tarfile.TarInfo) -> tuple[int, int]:
    """``member``'s modification time as ``os.utime``'s ``ns`` (access time alike)."""
    nanoseconds = int(member.mtime * 10**9)
    return nanoseconds, nanoseconds
