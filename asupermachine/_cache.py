"""Where built guest assets live: the user cache directory, keyed by content hash."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import string
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def cache_root() -> Path:
    """The project's cache directory (``$XDG_CACHE_HOME/asupermachine``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "asupermachine"


def data_root() -> Path:
    """The project's directory for what the user keeps (``$XDG_DATA_HOME/asupermachine``): volumes, paused machines."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "asupermachine"


def content_key(*parts: bytes) -> str:
    """A short, stable hash of the inputs that determine an artefact."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.hexdigest()[:24]


def file_digest(path: Path) -> bytes:
    """The sha256 of a file's content, streamed."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").digest()


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file, hashed once per version of it (see :func:`remembered`)."""
    return remembered(path, "sha256", lambda version: file_digest(version).hex(), _is_sha256)


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and set(text) <= set(string.hexdigits)


def remembered(path: Path, question: str, answer: Callable[[Path], str], valid: Callable[[str], bool]) -> str:
    """``answer(path)``, worked out once per version of the file and remembered across processes.

    A version is the file's path, size, mtime and ctime: a write changes the ctime,
    which no one can set back, so a changed file is always asked again. ``question``
    names what ``answer`` works out; a remembered text that is not ``valid`` (a
    damaged memo) is worked out again. An exception from ``answer`` is not remembered.
    """
    stat = path.stat()
    return _remembered(path.resolve(), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, question, answer, valid)


@functools.lru_cache(maxsize=256)
def _remembered(
    path: Path, size: int, mtime_ns: int, ctime_ns: int, question: str, answer: Callable[[Path], str],
    valid: Callable[[str], bool],
) -> str:
    # The kernel's source tarball is ~140 MB and a snapshot's memory file hundreds: hashing them for
    # every boot or restore cost more than the boot (seconds where Python runs slowly, such as nested KVM).
    version = f"{size}:{mtime_ns}:{ctime_ns}".encode()
    memo = cache_root() / "digests" / content_key(str(path).encode(), version, question.encode())
    with contextlib.suppress(OSError, UnicodeDecodeError):
        if valid(text := memo.read_text()):
            return text
    text = answer(path)
    staging = memo.with_name(f".{memo.name}.{os.getpid()}")
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        staging.write_text(text)
        os.replace(staging, memo)
    except OSError:  # a read-only or full cache only costs the next process the work
        staging.unlink(missing_ok=True)
    return text


@contextlib.contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an inter-process lock so only one process builds an artefact at a time."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """Return ``target``, first running ``build(staging_dir)`` if it is not cached yet.

    ``build`` writes ``target.name`` (and any companions) into ``staging_dir``, which
    is then renamed to ``target.parent`` in one step: a concurrent or crashed build
    never leaves a half-written artefact where it would be found.
    """
    if target.is_file():
        return target
    target.parent.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(target.parent.with_suffix(".lock")):
        if target.is_file():
            return target
        with tempfile.TemporaryDirectory(dir=target.parent.parent, prefix="build-") as work:
            staging = Path(work) / "out"
            staging.mkdir()
            build(staging)
            os.replace(staging, target.parent)
    return target
