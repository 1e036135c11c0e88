"""Where built guest assets live: the user cache directory, keyed by content hash."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path


def cache_root() -> Path:
    """The project's cache directory (``$XDG_CACHE_HOME/asupermachine``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
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
