"""A layer's tar stream read as Go's ``archive/tar`` reads it (docker, containerd, skopeo, umoci).

Real tools differ from the letter of the format at the end of an archive:
Debian's ``umoci insert`` ends a layer right after its last file's data, with
no padding to the 512-byte block and no end-of-archive blocks. Go's reader
takes a stream that ends at an entry boundary or right after the last entry's
data as the end of the archive, and so do we. A stream cut inside an entry's
header or data, or a damaged header after the first, is refused, where
Python's reader alone would end the archive there without a word.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from typing import IO, Any, Self

# What tarfile raises when the stream ends before a member's data and padding do.
_UNEXPECTED_END = "unexpected end of data"
# tarfile's own header errors (in the module since Python 3.2, not in its typed API).
_TRUNCATED_HEADER: type[Exception] = getattr(tarfile, "TruncatedHeaderError")  # noqa: B009
_INVALID_HEADER: type[Exception] = getattr(tarfile, "InvalidHeaderError")  # noqa: B009


class TarStreamError(Exception):
    """The stream is cut or damaged where no tool's reader would take it: the message says where."""


class _CheckedHeader(tarfile.TarInfo):
    """Headers whose damage after the first raises instead of ending the archive."""

    @classmethod
    def fromtarfile(cls, tarfile_: tarfile.TarFile) -> Self:
        try:
            return super().fromtarfile(tarfile_)
        except _TRUNCATED_HEADER:
            raise TarStreamError(f"the archive ends inside an entry's header (at byte {tarfile_.offset})") from None
        except _INVALID_HEADER as error:
            if tarfile_.offset == 0:
                raise  # not a tar at all: tarfile says so itself
            raise TarStreamError(f"damaged tar header at byte {tarfile_.offset}: {error}") from None


def open_tar_stream(stream: IO[bytes]) -> tarfile.TarFile:
    """A tarfile reading ``stream`` front to back, its headers checked."""
    return tarfile.open(fileobj=stream, mode="r|", tarinfo=_CheckedHeader)


def members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """The members of ``tar`` (from :func:`open_tar_stream`), ending where Go's reader ends."""
    last: tarfile.TarInfo | None = None
    while True:
        try:
            member = tar.next()
        except tarfile.ReadError as error:
            if str(error) != _UNEXPECTED_END or last is None:
                raise
            stream: Any = tar.fileobj
            if stream.tell() < last.offset_data + last.size:
                raise TarStreamError(f"the archive ends inside the data of {last.name!r}") from None
            return  # right after the last entry's data, its padding missing
        if member is None:
            return
        yield member
        last = member
