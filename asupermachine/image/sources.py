"""Local image sources copied into the store: OCI image layout directories and ``docker save`` archives.

Blobs are opened by digest only (a validated hex name), never by a path taken
from the source, and are verified as they are copied. Blocking: run in a worker thread.
"""

from __future__ import annotations

import contextlib
import io
import json
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, cast

from .digest import Digest
from .errors import ImageError, ManifestError, PlatformNotFound
from .manifest import (
    DOCKER_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    Index,
    Manifest,
    Platform,
    parse_config,
    parse_document,
)
from .store import ImageRecord, Store

REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"

OpenBlob = Callable[[Digest], contextlib.AbstractContextManager[IO[bytes]]]


def resolve_manifest(
    document: Manifest | Index, fetch: Callable[[Descriptor], bytes], platform: Platform
) -> tuple[Manifest, Digest | None]:
    """Follow an index to the manifest for ``platform``; returns it and its digest (None if ``document``)."""
    digest = None
    for _ in range(2):  # an index may point at one more index (nested by some tools), no deeper
        if isinstance(document, Manifest):
            return document, digest
        chosen = document.select(platform)
        digest = chosen.digest
        document = parse_document(fetch(chosen), chosen.media_type)
    raise ManifestError("index nesting is deeper than two levels")


def check_platform(config_data: bytes, platform: Platform) -> None:
    """Refuse a single-platform image built for another platform."""
    actual = parse_config(config_data).platform
    if (actual.os, actual.architecture) != (platform.os, platform.architecture):
        raise PlatformNotFound(f"the image is for {actual}, not {platform}", [str(actual)])


def import_layout(open_blob: OpenBlob, index_data: bytes, tag: str | None, platform: Platform, store: Store, name: str) -> ImageRecord:
    """Copy the image ``tag`` names in an OCI layout (or its only image) into the store."""
    index = parse_document(index_data, OCI_INDEX)
    if not isinstance(index, Index):
        raise ManifestError(f"{name}: index.json is not an image index")
    candidates = list(index.manifests)
    if tag is not None:
        candidates = [d for d in candidates if d.annotations.get(REF_NAME_ANNOTATION) == tag]
        if not candidates:
            tags = sorted({d.annotations.get(REF_NAME_ANNOTATION, "") for d in index.manifests} - {""})
            raise ImageError(f"{name}: no image tagged {tag!r} (tags: {', '.join(tags) or 'none'})")
    def fetch(descriptor: Descriptor) -> bytes:
        return _read_document(open_blob, descriptor)

    top: Manifest | Index = Index(tuple(candidates))
    top_digest = None
    if len(candidates) == 1:
        top, top_digest = parse_document(fetch(candidates[0]), candidates[0].media_type), candidates[0].digest
    manifest, chosen = resolve_manifest(top, fetch, platform)
    manifest_digest = chosen or top_digest
    if manifest_digest is None:
        raise ManifestError(f"{name}: no manifest found")
    config_data = _read_document(open_blob, manifest.config)
    check_platform(config_data, platform)
    for layer in manifest.layers:
        if not store.has(layer.digest):
            with open_blob(layer.digest) as source:
                store.copy_in(source, layer.digest, f"{name} layer {layer.digest}", layer.size)
    store.put(config_data, manifest.config.digest, f"{name} config")
    with open_blob(manifest_digest) as source:
        store.copy_in(source, manifest_digest, f"{name} manifest")
    record = ImageRecord(name, manifest_digest, manifest.config.digest)
    store.tag(record)
    return record


def _read_document(open_blob: OpenBlob, descriptor: Descriptor) -> bytes:
    with open_blob(descriptor.digest) as source:
        data = source.read(descriptor.size + 1)
    if len(data) != descriptor.size or Digest.of(data, descriptor.digest.algorithm) != descriptor.digest:
        raise ImageError(f"blob {descriptor.digest} does not match its descriptor (size or digest)")
    return data


def import_oci_layout(path: Path, tag: str | None, platform: Platform, store: Store) -> ImageRecord:
    """An OCI image layout directory (``oci-layout``, ``index.json``, ``blobs/``)."""
    if not (path / "oci-layout").is_file() or not (path / "index.json").is_file():
        raise ImageError(f"{path} is not an OCI image layout (no oci-layout or index.json)")

    @contextlib.contextmanager
    def open_blob(digest: Digest) -> Iterator[IO[bytes]]:
        try:
            with (path / "blobs" / digest.algorithm / digest.hex).open("rb") as blob:
                yield blob
        except FileNotFoundError:
            raise ImageError(f"{path}: blob {digest} is missing") from None

    name = f"oci:{path.resolve()}" + (f":{tag}" if tag else "")
    return import_layout(open_blob, (path / "index.json").read_bytes(), tag, platform, store, name)


def import_docker_archive(path: Path, tag: str | None, platform: Platform, store: Store) -> ImageRecord:
    """A ``docker save`` tarball: its OCI layout if it has one (docker 25+), else its ``manifest.json``."""
    name = f"docker-archive:{path.resolve()}" + (f":{tag}" if tag else "")
    try:
        with tarfile.open(path, "r:*") as archive:
            members = {member.name.removeprefix("./"): member for member in archive.getmembers() if member.isfile()}

            @contextlib.contextmanager
            def open_member(member_name: str) -> Iterator[IO[bytes]]:
                member = members.get(member_name)
                source = archive.extractfile(member) if member is not None else None
                if source is None:
                    raise ImageError(f"{path}: {member_name} is missing from the archive")
                with source:
                    yield source

            if "oci-layout" in members and "index.json" in members and tag is None:
                with open_member("index.json") as index:
                    index_data = index.read()
                return import_layout(
                    lambda digest: open_member(f"blobs/{digest.algorithm}/{digest.hex}"),
                    index_data, None, platform, store, name,
                )
            return _import_legacy_archive(open_member, tag, platform, store, name)
    except tarfile.TarError as error:
        raise ImageError(f"{path} is not a docker archive: {error}") from None


def _import_legacy_archive(
    open_member: Callable[[str], contextlib.AbstractContextManager[IO[bytes]]],
    tag: str | None,
    platform: Platform,
    store: Store,
    name: str,
) -> ImageRecord:
    with open_member("manifest.json") as source:
        try:
            entries = json.loads(source.read(1 << 20))
        except ValueError:
            raise ManifestError(f"{name}: manifest.json is not JSON") from None
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise ManifestError(f"{name}: manifest.json lists no images")
    if tag is not None:
        entries = [e for e in entries if tag in e.get("RepoTags", []) or f"{tag}:latest" in e.get("RepoTags", [])]
        if not entries:
            raise ImageError(f"{name}: no image tagged {tag!r}")
    elif len(entries) > 1:
        tags = [t for e in entries for t in e.get("RepoTags", [])]
        raise ImageError(f"{name} holds {len(entries)} images: name one with tag= ({', '.join(tags)})")
    entry = entries[0]
    config_name, layer_names = entry.get("Config"), entry.get("Layers")
    if not isinstance(config_name, str) or not isinstance(layer_names, list):
        raise ManifestError(f"{name}: manifest.json entry needs Config and Layers")
    with open_member(config_name) as source:
        config_data = source.read(4 << 20)
    check_platform(config_data, platform)
    config_digest = Digest.of(config_data)
    layers = []
    for layer_name in layer_names:
        with open_member(str(layer_name)) as source:
            buffered = io.BufferedReader(cast(Any, source))
            magic = buffered.peek(4)[:4]
            digest, size = store.ingest(buffered)
        media_type = OCI_LAYER_GZIP if magic.startswith(b"\x1f\x8b") else (
            OCI_LAYER_ZSTD if magic == b"\x28\xb5\x2f\xfd" else OCI_LAYER_TAR
        )
        layers.append({"mediaType": media_type, "digest": str(digest), "size": size})
    store.put(config_data, config_digest, f"{name} config")
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG, "digest": str(config_digest), "size": len(config_data)},
        "layers": layers,
    }, sort_keys=True).encode()
    manifest_digest = Digest.of(manifest)
    store.put(manifest, manifest_digest, f"{name} manifest")
    record = ImageRecord(name, manifest_digest, config_digest)
    store.tag(record)
    return record
