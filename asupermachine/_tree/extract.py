"""Extract a tree the guest streams as tar onto the host, refusing whatever would leave the target.

The guest is untrusted. Its entries are named ``.`` (the tree's root) and
``./a/b`` below it; they land at one host path, the *target*, inside a
:class:`RootedTree` of the target's directory, so no entry is resolved from
``/`` and no symlink is followed, the guest's or the user's. Absolute names,
``..``, writes through a symlink, hardlinks to outside the target, device nodes
and fifos are refused with :class:`UnsafeGuestTree`. Symlinks themselves are
kept as they are, wherever they point (as ``docker cp`` keeps them): they are
never followed here. Modes are kept but setuid and setgid, and ownership is the
user's; xattrs are not applied.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
import tarfile
from pathlib import Path
from typing import IO

from .._errors import UnsafeGuestTree
from ..image.tar_stream import members, open_tar_stream
from .rooted import Components, RootedTree, entry_path, is_directory, mtime_ns, remove, write_regular

_KEPT_MODE_BITS = 0o1777  # permissions and sticky; never setuid or setgid from the guest


def download_target(host_path: str | os.PathLike[str], guest_path: str) -> tuple[Path, str]:
    """Where a download lands, as ``docker cp`` puts it: the host directory and the name in it.

    An existing directory ``host_path`` receives the tree inside, under the guest
    path's last component; otherwise ``host_path`` becomes the copy. Raises
    ``ValueError`` when the guest path has no name to take (``/``).
    """
    target = Path(host_path)
    if target.is_dir():
        name = posixpath.basename(posixpath.normpath(guest_path))
        if name in ("", "/", ".", ".."):
            raise ValueError(f"guest path {guest_path!r} has no name to copy into {target}: name the target")
        return target, name
    return target.parent, target.name


class TreeExtractor:
    """Extracts one tar stream as the entry ``name`` of the host directory ``directory``."""

    def __init__(self, directory: str | os.PathLike[str], name: str, source: str) -> None:
        self._directory = Path(directory)
        self._name = name
        self._source = source
        self._entry = ""

    def _refuse(self, why: str) -> UnsafeGuestTree:
        return UnsafeGuestTree(
            f"the guest's tree {self._source!r}, entry {self._entry!r}: {why}: refused"
            f" (nothing was written outside {self._directory / self._name})"
        )

    def _path(self, name: str) -> Components:
        """``name`` from the archive as components of :attr:`_directory`, under the target."""
        try:
            return (self._name, *entry_path(name))
        except ValueError as error:
            raise self._refuse(str(error)) from None

    def extract(self, stream: IO[bytes]) -> None:
        """Read ``stream`` to the end of its archive, writing each entry as it comes.

        :raises UnsafeGuestTree: for an entry that would leave the target or is no plain
            file, directory, symlink or hardlink within it
        :raises tarfile.TarError: if the stream is not a tar archive
        :raises TarStreamError: if it is cut short
        """
        directories: list[tuple[Components, tarfile.TarInfo]] = []
        with RootedTree(self._directory) as tree, open_tar_stream(stream) as tar:
            try:
                for member in members(tar):
                    self._entry = member.name
                    self._extract_entry(tree, tar, member, directories)
                # Children first changed their parents' times; a read-only parent was still writable.
                for path, member in reversed(directories):
                    with tree.parent(path) as parent:
                        os.chmod(path[-1], stat.S_IMODE(member.mode) & _KEPT_MODE_BITS, dir_fd=parent)
                        os.utime(path[-1], ns=mtime_ns(member), dir_fd=parent, follow_symlinks=False)
            except OSError as error:
                if error.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise self._refuse("goes through a symlink or a non-directory") from None
                raise

    def _extract_entry(
        self,
        tree: RootedTree,
        tar: tarfile.TarFile,
        member: tarfile.TarInfo,
        directories: list[tuple[Components, tarfile.TarInfo]],
    ) -> None:
        path = self._path(member.name)
        name = path[-1]
        if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
            raise self._refuse("a device node, fifo or unknown entry type")
        with tree.parent(path) as parent:
            if member.isdir():
                if not is_directory(parent, name):
                    remove(parent, name)
                    os.mkdir(name, 0o700, dir_fd=parent)
                directories.append((path, member))
                return
            remove(parent, name)
            if member.issym():
                os.symlink(member.linkname, name, dir_fd=parent)
                return
            if member.islnk():
                self._link(tree, member, parent, name)
                return
            write_regular(tar, member, parent, name)
            os.chmod(name, stat.S_IMODE(member.mode) & _KEPT_MODE_BITS, dir_fd=parent)
            os.utime(name, ns=mtime_ns(member), dir_fd=parent, follow_symlinks=False)

    def _link(self, tree: RootedTree, member: tarfile.TarInfo, parent: int, name: str) -> None:
        source = self._path(member.linkname)
        try:
            with tree.parent(source, create=False) as source_parent:
                if is_directory(source_parent, source[-1]):
                    raise self._refuse("a hardlink to a directory")
                os.link(source[-1], name, src_dir_fd=source_parent, dst_dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            raise self._refuse(f"a hardlink to {member.linkname!r}, which the tree does not hold") from None
