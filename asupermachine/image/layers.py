"""Apply image layers (tar, gzip or zstd) to a directory tree, refusing anything that would leave it.

The tree is a :class:`RootedTree`: no path from a layer is ever resolved by the
host kernel from ``/``, and no symlink in the tree is followed.
Entries with absolute paths or ``..`` components, writes through a symlink,
hardlinks to outside, whiteouts that name ``..`` and layers that decompress
past the limits are refused with :class:`LayerError` naming the layer and entry.
Ownership, modes (setuid/setgid/sticky), xattrs, times, hardlinks, symlinks,
device nodes and fifos are kept; applying them needs root, as building a root
filesystem does.
"""

from __future__ import annotations

import errno
import gzip
import io
import os
import stat
import tarfile
import zlib
from dataclasses import dataclass
from typing import IO, Any, cast

import zstandard

from .._errors import LayerError
from .._tree.rooted import (
    Components,
    RootedTree,
    entry_path,
    is_directory,
    mtime_ns,
    remove,
    symlink_stays_inside,
    write_regular,
)
from .store import COPY_CHUNK
from .tar_stream import TarStreamError, members, open_tar_stream

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
XATTR_PAX_PREFIX = "SCHILY.xattr."
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@dataclass(frozen=True)
class Limits:
    """How much all layers of one image may unpack to: a decompression bomb stops here."""

    max_bytes: int = 32 << 30
    max_entries: int = 2_000_000


class _Counted(io.RawIOBase):
    """A read-only stream that raises once more than ``budget`` bytes came through it."""

    def __init__(self, inner: IO[bytes], applier: LayerApplier) -> None:
        self._inner = inner
        self._applier = applier

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._inner.read(len(buffer))
        self._applier._count_bytes(len(data))
        buffer[: len(data)] = data
        return len(data)


def decompressed(stream: IO[bytes]) -> IO[bytes]:
    """The layer's tar stream, whatever its compression (sniffed, not trusted from the media type)."""
    buffered = stream if isinstance(stream, io.BufferedReader) else io.BufferedReader(cast(Any, stream), COPY_CHUNK)
    magic = buffered.peek(4)[:4]
    if magic.startswith(GZIP_MAGIC):
        return cast(IO[bytes], gzip.GzipFile(fileobj=buffered, mode="rb"))
    if magic == ZSTD_MAGIC:
        return cast(IO[bytes], zstandard.ZstdDecompressor().stream_reader(buffered))
    return buffered


class LayerApplier:
    """Applies layers in order to ``root``; limits count across all of them."""

    def __init__(self, root: str | os.PathLike[str], limits: Limits = Limits()) -> None:
        self._limits = limits
        self._bytes = 0
        self._entries = 0
        self._tree = RootedTree(root)
        self._layer = ""
        self._entry = ""

    def close(self) -> None:
        self._tree.close()

    def __enter__(self) -> LayerApplier:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _count_bytes(self, count: int) -> None:
        self._bytes += count
        if self._bytes > self._limits.max_bytes:
            raise self._refuse(f"unpacks to more than {self._limits.max_bytes} bytes (a decompression bomb?)")

    def _refuse(self, why: str) -> LayerError:
        entry = f", entry {self._entry!r}" if self._entry else ""
        return LayerError(f"layer {self._layer}{entry}: {why}")

    def apply(self, stream: IO[bytes], layer: str) -> None:
        """Apply one layer's (possibly compressed) tar stream; ``layer`` names it in errors."""
        self._layer, self._entry = layer, ""
        created: set[Components] = set()
        directory_times: list[tuple[Components, tarfile.TarInfo]] = []
        try:
            counted = io.BufferedReader(_Counted(decompressed(stream), self), COPY_CHUNK)
            with open_tar_stream(counted) as tar:
                for member in members(tar):
                    self._entry = member.name
                    self._entries += 1
                    if self._entries > self._limits.max_entries:
                        raise self._refuse(f"more than {self._limits.max_entries} entries in the image")
                    try:
                        path = entry_path(member.name)
                    except ValueError as error:
                        raise self._refuse(f"{error}: refused") from None
                    if not path:
                        continue  # the root itself
                    self._apply_entry(tar, member, path, created, directory_times)
            self._entry = ""
            for path, member in reversed(directory_times):  # children first changed their parents' times
                with self._tree.parent(path) as parent:
                    os.utime(path[-1], ns=mtime_ns(member), dir_fd=parent, follow_symlinks=False)
        except LayerError:
            raise
        except TarStreamError as error:
            self._entry = ""  # the message says where
            raise self._refuse(str(error)) from None
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, zstandard.ZstdError) as error:
            raise self._refuse(f"not a valid (compressed) tar archive: {error}") from None
        except OSError as error:
            if error.errno in (errno.ELOOP, errno.ENOTDIR):
                raise self._refuse("goes through a symlink or a non-directory: refused") from None
            raise self._refuse(f"cannot be applied: {error.strerror or error}") from None

    def _apply_entry(
        self,
        tar: tarfile.TarFile,
        member: tarfile.TarInfo,
        path: Components,
        created: set[Components],
        directory_times: list[tuple[Components, tarfile.TarInfo]],
    ) -> None:
        name = path[-1]
        if name == OPAQUE_MARKER:
            self._make_opaque(path[:-1], created)
            return
        if name.startswith(WHITEOUT_PREFIX):
            hidden = name[len(WHITEOUT_PREFIX) :]
            if hidden in ("", ".", "..") or "/" in hidden:
                raise self._refuse("whiteout of an impossible name: refused")
            with self._tree.parent(path) as parent:
                remove(parent, hidden)
            return
        with self._tree.parent(path) as parent:
            if member.isdir():
                if not is_directory(parent, name):
                    remove(parent, name)
                    os.mkdir(name, 0o700, dir_fd=parent)
                directory_times.append((path, member))
            else:
                remove(parent, name)
                self._create(tar, member, path, parent)
            created.add(path)
            self._set_attributes(member, parent, name)

    def _create(self, tar: tarfile.TarFile, member: tarfile.TarInfo, path: Components, parent: int) -> None:
        name = path[-1]
        if member.isreg():
            try:
                write_regular(tar, member, parent, name)
            except tarfile.ReadError:
                raise self._refuse("the archive ends inside this entry's data") from None
        elif member.issym():
            if not symlink_stays_inside(path, member.linkname):
                raise self._refuse(f"symlink to {member.linkname!r} leaves the image: refused")
            os.symlink(member.linkname, name, dir_fd=parent)
        elif member.islnk():
            try:
                source_path = entry_path(member.linkname)
            except ValueError as error:
                raise self._refuse(f"hardlink target {member.linkname!r}: {error}: refused") from None
            if not source_path:
                raise self._refuse("hardlink to the image root: refused")
            with self._tree.parent(source_path, create=False) as source_parent:
                if is_directory(source_parent, source_path[-1]):
                    raise self._refuse("hardlink to a directory: refused")
                os.link(source_path[-1], name, src_dir_fd=source_parent, dst_dir_fd=parent, follow_symlinks=False)
        elif member.ischr() or member.isblk():
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            os.mknod(name, kind | 0o600, os.makedev(member.devmajor, member.devminor), dir_fd=parent)
        elif member.isfifo():
            os.mkfifo(name, 0o600, dir_fd=parent)
        else:
            raise self._refuse(f"unsupported tar entry type {member.type!r}: refused")

    def _set_attributes(self, member: tarfile.TarInfo, parent: int, name: str) -> None:
        if member.islnk():
            return  # a hardlink shares its source's inode and attributes
        os.chown(name, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
        if member.issym():
            os.utime(name, ns=mtime_ns(member), dir_fd=parent, follow_symlinks=False)
            return
        os.chmod(name, stat.S_IMODE(member.mode), dir_fd=parent)  # after chown, which clears setuid
        in_tree = f"/proc/self/fd/{parent}/{name}"
        for key, value in member.pax_headers.items():
            if key.startswith(XATTR_PAX_PREFIX):
                raw = value.encode("utf-8", "surrogateescape")
                os.setxattr(in_tree, key[len(XATTR_PAX_PREFIX) :], raw, follow_symlinks=False)
        if not member.isdir():
            os.utime(name, ns=mtime_ns(member), dir_fd=parent, follow_symlinks=False)

    def _make_opaque(self, directory: Components, created: set[Components]) -> None:
        """Hide what lower layers put under ``directory``; keep what this layer added."""
        with self._tree.directory(directory) as fd:
            self._prune_lower(fd, directory, created)

    def _prune_lower(self, fd: int, directory: Components, created: set[Components]) -> None:
        for name in os.listdir(fd):
            path = (*directory, name)
            if path not in created:
                remove(fd, name)
            elif is_directory(fd, name):
                with self._tree.directory(path, create=False) as child:
                    self._prune_lower(child, path, created)
