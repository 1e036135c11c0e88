"""The layer of a COPY or ADD, written on the host from the context or another stage's tree.

Docker's rules, as buildah applies them: a directory's contents land in the
destination, a file lands in it if it ends in ``/`` or is a directory already,
else at it; several sources need a directory. Files from the context are
root's, from another stage or an archive they keep their owner, and
``--chown``/``--chmod`` set both for everything copied. Times are kept.
Directories the destination needs (a directory's destination too) are made
``0755``, root's or ``--chown``'s. ADD unpacks a local tar archive (plain,
gzip, bzip2 or xz) into the destination.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import posixpath
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from .._errors import BuildError
from ..image.tar_stream import members, open_tar_stream
from .scoped import resolve_in, scoped_parts

ARCHIVE_OPENERS: dict[bytes, Callable[[IO[bytes]], IO[bytes]]] = {
    b"\x1f\x8b": lambda raw: cast(IO[bytes], gzip.GzipFile(fileobj=raw)),
    b"BZh": lambda raw: cast(IO[bytes], bz2.BZ2File(raw)),
    b"\xfd7zXZ\x00": lambda raw: cast(IO[bytes], lzma.LZMAFile(raw)),
}
CREATED_DIRECTORY_MODE = 0o755
TAR_HEADER = 512


@dataclass(frozen=True)
class Source:
    """One source of a COPY or ADD: a path in a scope (the context, or a stage's tree)."""

    scope: Path
    path: Path
    """Inside ``scope``, resolved."""
    keeps_owner: bool
    """From another stage or image (docker keeps its owner), not from the context (root's)."""
    ignored: Callable[[Path], bool] = lambda _: False
    """Paths under ``path`` left out (the context's ``.dockerignore``)."""


@dataclass(frozen=True)
class CopyOptions:
    owner: tuple[int, int] | None = None
    mode: int | None = None
    unpack_archives: bool = False
    """ADD: a local tar archive is unpacked, not copied."""


class CopyLayer:
    """Writes one COPY's entries to ``tar``, deciding where each lands from the stage's ``tree``."""

    def __init__(self, tree: Path, tar: tarfile.TarFile, options: CopyOptions) -> None:
        self._tree, self._tar, self._options = tree, tar, options
        self._written: set[str] = set()

    def copy(self, sources: list[Source], destination: str) -> None:
        """Copy ``sources`` to ``destination`` (absolute); :class:`BuildError` if that cannot be."""
        into_directory = destination.endswith("/") or len(sources) > 1
        target = self._resolved(destination)
        if len(sources) > 1 and not destination.endswith("/") and not self._is_directory(target):
            raise BuildError(f"copying {len(sources)} sources needs a directory destination ending in '/': "
                             f"{destination!r}")
        for source in sources:
            if source.path.is_dir():
                self._directory(source, source.path, target)
            elif self._options.unpack_archives and (opener := _archive_opener(source.path)) is not None:
                self._unpack(source.path, opener, target)
            else:
                name = target
                if into_directory or self._is_directory(target):
                    name = f"{target}/{source.path.name}" if target else source.path.name
                self._parents(name)
                self._entry(source, source.path, name)

    def _resolved(self, destination: str) -> str:
        """The destination inside the tree, symlinks on the way followed as docker follows them."""
        path = resolve_in(self._tree, destination, follow_last=True)
        return "/".join(path.relative_to(self._tree).parts)

    def _is_directory(self, name: str) -> bool:
        return name == "" or name in self._written or (self._tree / name).is_dir()

    def _parents(self, name: str, *, including: bool = False) -> None:
        """Entries for the directories above ``name`` (and ``name``, if ``including``) that neither the tree
        nor this layer has."""
        parts = scoped_parts(name)[: None if including else -1]
        for depth in range(1, len(parts) + 1):
            directory = "/".join(parts[:depth])
            if directory in self._written:
                continue
            existing = self._tree / directory
            if existing.is_symlink() or (existing.exists() and not existing.is_dir()):
                raise BuildError(f"cannot copy to /{name}: /{directory} is not a directory")
            if not existing.is_dir():
                info = tarfile.TarInfo(directory)
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, CREATED_DIRECTORY_MODE, time.time()
                self._add(info, created=True)

    def _directory(self, source: Source, directory: Path, target: str) -> None:
        """The directory's contents into ``target``, made as a parent is if missing (buildah's rule)."""
        self._parents(target, including=True)
        for path in sorted(_walk(directory, source.ignored)):
            name = posixpath.join(target, *path.relative_to(directory).parts)
            self._entry(source, path, name)

    def _entry(self, source: Source, path: Path, name: str) -> None:
        existing = self._tree / name
        if existing.is_dir() and not existing.is_symlink() and not path.is_dir():
            raise BuildError(f"cannot copy the file {path.name} over the directory /{name}")
        info = self._tar.gettarinfo(str(path), arcname=name)
        if info is None:
            return  # a socket: no layer can hold one, and docker leaves it out too
        if not source.keeps_owner:
            info.uid = info.gid = 0
        self._add(info, path if info.isreg() else None)

    def _unpack(self, archive: Path, opener: Callable[[IO[bytes]], IO[bytes]], target: str) -> None:
        if target:
            self._parents(f"{target}/-")
        with archive.open("rb") as raw, opener(raw) as stream, open_tar_stream(stream) as tar:
            for member in members(tar):
                parts = scoped_parts(member.name)
                if not parts or member.name.startswith("/") or ".." in member.name.split("/"):
                    continue  # docker unpacks with the same containment: such entries stay out
                member.name = "/".join([*scoped_parts(target), *parts])
                if member.islnk():
                    member.linkname = "/".join([*scoped_parts(target), *scoped_parts(member.linkname)])
                data = tar.extractfile(member) if member.isreg() else None
                self._add(member, data)

    def _add(self, info: tarfile.TarInfo, data: Path | IO[bytes] | None = None, *, created: bool = False) -> None:
        """Add ``info`` as ``--chown`` and ``--chmod`` say (``--chmod`` not for ``created`` parents)."""
        if self._options.owner is not None:
            info.uid, info.gid = self._options.owner
        if self._options.mode is not None and not info.issym() and not created:
            info.mode = self._options.mode
        info.uname = info.gname = ""
        self._written.add(info.name)
        if isinstance(data, Path):
            with data.open("rb") as file:
                self._tar.addfile(info, file)
        else:
            self._tar.addfile(info, data)


def _walk(directory: Path, ignored: Callable[[Path], bool]) -> Iterator[Path]:
    for root, directories, files in os.walk(directory):
        base = Path(root)
        directories[:] = [name for name in directories if not ignored(base / name)]
        for name in directories:
            yield base / name
        for name in files:
            if not ignored(base / name):
                yield base / name


def _archive_opener(path: Path) -> Callable[[IO[bytes]], IO[bytes]] | None:
    """How to read ``path`` if it is a tar archive (compressed or not), else None: it is copied as is."""
    with path.open("rb") as file:
        magic = file.read(6)
    opener = next((open_ for prefix, open_ in ARCHIVE_OPENERS.items() if magic.startswith(prefix)), _plain)
    try:
        with path.open("rb") as raw, opener(raw) as stream:
            head = stream.read(TAR_HEADER)
    except (OSError, EOFError, lzma.LZMAError):
        return None
    return opener if len(head) == TAR_HEADER and head[257:262] == b"ustar" else None


def _plain(raw: IO[bytes]) -> IO[bytes]:
    return raw
