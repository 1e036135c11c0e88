"""The content-addressed image store in the user cache dir.

``blobs/<algorithm>/<hex>`` holds verified blobs (manifests, configs, layers as
pulled), ``refs/`` what each image name points at, ``rootfs/`` root disks by
config digest. Every file appears by an atomic rename of a verified temporary,
so concurrent pulls in one process or several never expose partial content.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .._cache import cache_root
from .._errors import ImageError
from .digest import Digest, Hasher
from .manifest import MAX_DOCUMENT, Manifest, parse_document

# Bytes per read and write when copying blob or file data (the store, layers, pulls).
COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class ImageRecord:
    """A name in the store and the manifest (and config) it resolved to."""

    name: str
    manifest: Digest
    config: Digest


class BlobWriter:
    """Write a blob's bytes as they arrive; :meth:`commit` verifies them and moves them into place."""

    def __init__(self, store: Store, digest: Digest, what: str, size_limit: int | None) -> None:
        self._store, self.digest, self._what, self._limit = store, digest, what, size_limit
        self._hasher = Hasher(digest)
        fd, name = tempfile.mkstemp(dir=store.temporary, prefix="blob-")
        self._file = os.fdopen(fd, "wb")
        self._path = Path(name)

    def write(self, chunk: bytes) -> None:
        self._hasher.update(chunk)
        if self._limit is not None and self._hasher.size > self._limit:
            raise ImageError(f"{self._what}: more than the {self._limit} bytes its descriptor declares")
        self._file.write(chunk)

    def commit(self) -> Path:
        self._file.close()
        self._hasher.verify(self._what)
        if self._limit is not None and self._hasher.size != self._limit:
            raise ImageError(f"{self._what}: {self._hasher.size} bytes, its descriptor declares {self._limit}")
        target = self._store.blob_path(self.digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._path, target)
        return target

    def discard(self) -> None:
        self._file.close()
        self._path.unlink(missing_ok=True)


class Store:
    """Blobs by digest, names to manifests, root disks by config digest (blocking file IO)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root if root is not None else cache_root() / "images"
        self.temporary = self.root / "tmp"
        self.rootfs = self.root / "rootfs"
        self.temporary.mkdir(parents=True, exist_ok=True)

    def blob_path(self, digest: Digest) -> Path:
        return self.root / "blobs" / digest.algorithm / digest.hex

    def has(self, digest: Digest) -> bool:
        return self.blob_path(digest).is_file()

    @contextlib.contextmanager
    def writer(self, digest: Digest, what: str, size: int | None = None) -> Iterator[BlobWriter]:
        """A :class:`BlobWriter` that is committed if the block ends normally, discarded otherwise."""
        writer = BlobWriter(self, digest, what, size)
        try:
            yield writer
            writer.commit()
        finally:
            writer.discard()

    def ingest(self, source: IO[bytes]) -> tuple[Digest, int]:
        """Store a stream whose digest is not known in advance; returns its sha256 digest and size."""
        hasher = hashlib.sha256()
        size = 0
        fd, name = tempfile.mkstemp(dir=self.temporary, prefix="blob-")
        try:
            with os.fdopen(fd, "wb") as file:
                while chunk := source.read(COPY_CHUNK):
                    hasher.update(chunk)
                    size += len(chunk)
                    file.write(chunk)
            digest = Digest("sha256", hasher.hexdigest())
            target = self.blob_path(digest)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(name, target)
        finally:
            Path(name).unlink(missing_ok=True)
        return digest, size

    def copy_in(self, source: IO[bytes], digest: Digest, what: str, size: int | None = None) -> None:
        """Store a stream that must have ``digest`` (and ``size``); verified before it appears."""
        with self.writer(digest, what, size) as writer:
            while chunk := source.read(COPY_CHUNK):
                writer.write(chunk)

    def put(self, data: bytes, digest: Digest, what: str) -> None:
        self.copy_in(io.BytesIO(data), digest, what, len(data))

    def read_document(self, digest: Digest) -> bytes:
        """A stored manifest, index or config (small by definition)."""
        with self.blob_path(digest).open("rb") as blob:
            data = blob.read(MAX_DOCUMENT + 1)
        return data

    def tag(self, record: ImageRecord) -> None:
        """Point ``record.name`` at its manifest (atomically replacing an older target)."""
        fd, name = tempfile.mkstemp(dir=self.temporary, prefix="ref-")
        with os.fdopen(fd, "w") as file:
            json.dump({"name": record.name, "manifest": str(record.manifest), "config": str(record.config)}, file)
        path = self._ref_path(record.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(name, path)

    def lookup(self, name: str) -> ImageRecord | None:
        path = self._ref_path(name)
        try:
            document = json.loads(path.read_text())
            record = ImageRecord(document["name"], Digest.parse(document["manifest"]), Digest.parse(document["config"]))
        except (OSError, ValueError, KeyError, ImageError):
            return None
        return record if self.has(record.manifest) and self.has(record.config) else None

    def records(self) -> list[ImageRecord]:
        refs = self.root / "refs"
        names = [json.loads(p.read_text()).get("name", "") for p in refs.glob("*.json")] if refs.is_dir() else []
        return sorted((r for n in names if (r := self.lookup(n)) is not None), key=lambda r: r.name)

    def _ref_path(self, name: str) -> Path:
        return self.root / "refs" / f"{Digest.of(name.encode()).hex[:32]}.json"

    def prune(self) -> int:
        """Remove blobs and root disks no name refers to; returns the bytes freed."""
        keep: set[Path] = set()
        keep_rootfs: set[str] = set()
        for record in self.records():
            keep.add(self.blob_path(record.manifest))
            keep.add(self.blob_path(record.config))
            keep_rootfs.add(record.config.hex)
            document = parse_document(self.read_document(record.manifest))
            if isinstance(document, Manifest):  # names always point at manifests, never indexes
                keep.update(self.blob_path(layer.digest) for layer in document.layers)
        freed = 0
        blobs = self.root / "blobs"
        for path in blobs.glob("*/*") if blobs.is_dir() else []:
            if path not in keep:
                freed += path.stat().st_size
                path.unlink()
        for path in self.rootfs.iterdir() if self.rootfs.is_dir() else []:
            if path.name not in keep_rootfs and path.is_dir():
                freed += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
                shutil.rmtree(path)
        return freed
