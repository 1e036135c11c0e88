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

from .._errors import ImageError, ManifestError, PlatformNotFound
from .digest import Digest
from .manifest import (
    DOCKER_CONFIG,
    MAX_DOCUMENT,
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


def layout_index(index_data: bytes, name: str) -> Index:
    """A layout's ``index.json``."""
    index = parse_document(index_data, OCI_INDEX)
    if not isinstance(index, Index):
        raise ManifestError(f"{name}: index.json is not an image index")
    return index


def import_layout(
    open_blob: OpenBlob, index_data: bytes, tag: str | None, platform: Platform, store: Store, name: str
) -> ImageRecord:
    """Copy the image ``tag`` names in an OCI layout (or its only image) into the store."""
    index = layout_index(index_data, name)
    candidates = list(index.manifests)
    if tag is not None:
        candidates = [d for d in candidates if d.annotations.get(REF_NAME_ANNOTATION) == tag]
        if not candidates:
            tags = sorted({d.annotations.get(REF_NAME_ANNOTATION, "") for d in index.manifests} - {""})
            raise ImageError(f"{name}: no image tagged {tag!r} (tags: {', '.join(tags) or 'none'})")
    return import_candidates(open_blob, candidates, platform, store, name)


def import_candidates(
    open_blob: OpenBlob, candidates: list[Descriptor], platform: Platform, store: Store, name: str | None,
    where: str = "",
) -> ImageRecord:
    """Copy the image among ``candidates`` (one, or an index's platforms) into the store as ``name``.

    Without a name the image is named by its manifest digest; ``where`` names the source in errors.
    """
    where = where or name or "image layout"

    def fetch(descriptor: Descriptor) -> bytes:
        return _read_document(open_blob, descriptor)

    top: Manifest | Index = Index(tuple(candidates))
    top_digest = None
    if len(candidates) == 1:
        top, top_digest = parse_document(fetch(candidates[0]), candidates[0].media_type), candidates[0].digest
    manifest, chosen = resolve_manifest(top, fetch, platform)
    manifest_digest = chosen or top_digest
    if manifest_digest is None:
        raise ManifestError(f"{where}: no manifest found")
    config_data = _read_document(open_blob, manifest.config)
    check_platform(config_data, platform)
    for layer in manifest.layers:
        if not store.has(layer.digest):
            with open_blob(layer.digest) as source:
                store.copy_in(source, layer.digest, f"{where} layer {layer.digest}", layer.size)
    store.put(config_data, manifest.config.digest, f"{where} config")
    with open_blob(manifest_digest) as source:
        store.copy_in(source, manifest_digest, f"{where} manifest")
    record = ImageRecord(name or str(manifest_digest), manifest_digest, manifest.config.digest)
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
    name = f"oci:{path.resolve()}" + (f":{tag}" if tag else "")
    return import_layout(layout_blobs(path), (path / "index.json").read_bytes(), tag, platform, store, name)


def layout_blobs(path: Path) -> OpenBlob:
    """Blobs of the OCI layout directory ``path``, opened by digest."""

    @contextlib.contextmanager
    def open_blob(digest: Digest) -> Iterator[IO[bytes]]:
        try:
            with (path / "blobs" / digest.algorithm / digest.hex).open("rb") as blob:
                yield blob
        except FileNotFoundError:
            raise ImageError(f"{path}: blob {digest} is missing") from None

    return open_blob


OpenMember = Callable[[str], contextlib.AbstractContextManager[IO[bytes]]]


@contextlib.contextmanager
def open_archive(path: Path, kind: str) -> Iterator[tuple[set[str], OpenMember]]:
    """The regular files of a tar archive (names without ``./``) and a way to open one."""
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

            yield set(members), open_member
    except tarfile.TarError as error:
        raise ImageError(f"{path} is not {kind}: {error}") from None


def archived_layout(open_member: OpenMember) -> tuple[OpenBlob, bytes]:
    with open_member("index.json") as index:
        index_data = index.read(MAX_DOCUMENT + 1)  # larger is refused by its parser
    return (lambda digest: open_member(f"blobs/{digest.algorithm}/{digest.hex}")), index_data


def is_layout(names: set[str]) -> bool:
    return {"oci-layout", "index.json"} <= names


def import_docker_archive(path: Path, tag: str | None, platform: Platform, store: Store) -> ImageRecord:
    """A ``docker save`` tarball: its OCI layout if it has one (docker 25+), else its ``manifest.json``."""
    name = f"docker-archive:{path.resolve()}" + (f":{tag}" if tag else "")
    with open_archive(path, "a docker archive") as (names, open_member):
        if is_layout(names) and tag is None:
            return import_layout(*archived_layout(open_member), None, platform, store, name)
        return _import_legacy_archive(open_member, tag, platform, store, name)


def import_oci_archive(path: Path, tag: str | None, platform: Platform, store: Store) -> ImageRecord:
    """A tar of an OCI image layout (``skopeo copy ... oci-archive:``, ``buildah push``)."""
    name = f"oci-archive:{path.resolve()}" + (f":{tag}" if tag else "")
    with open_archive(path, "an OCI archive") as (names, open_member):
        if not is_layout(names):
            raise ImageError(f"{path} is not an OCI archive (no oci-layout or index.json in it)")
        return import_layout(*archived_layout(open_member), tag, platform, store, name)


def _import_legacy_archive(
    open_member: OpenMember,
    tag: str | None,
    platform: Platform,
    store: Store,
    name: str,
) -> ImageRecord:
    entries = legacy_entries(open_member, name)
    if tag is not None:
        entries = [e for e in entries if tag in e.get("RepoTags", []) or f"{tag}:latest" in e.get("RepoTags", [])]
        if not entries:
            raise ImageError(f"{name}: no image tagged {tag!r}")
    elif len(entries) > 1:
        tags = [t for e in entries for t in e.get("RepoTags", [])]
        raise ImageError(f"{name} holds {len(entries)} images: name one with tag= ({', '.join(tags)})")
    return import_legacy_entry(open_member, entries[0], platform, store, name)


def legacy_entries(open_member: OpenMember, name: str) -> list[dict[str, Any]]:
    """The images a ``docker save`` archive's ``manifest.json`` lists."""
    with open_member("manifest.json") as source:
        try:
            entries = json.loads(source.read(MAX_DOCUMENT + 1))
        except ValueError:
            raise ManifestError(f"{name}: manifest.json is not JSON") from None
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise ManifestError(f"{name}: manifest.json lists no images")
    return entries


def import_legacy_entry(
    open_member: OpenMember, entry: dict[str, Any], platform: Platform, store: Store, name: str | None, where: str = ""
) -> ImageRecord:
    """Copy one image of a ``docker save`` archive into the store as ``name`` (its manifest digest if None)."""
    where = where or name or "docker archive"
    config_name, layer_names = entry.get("Config"), entry.get("Layers")
    if not isinstance(config_name, str) or not isinstance(layer_names, list):
        raise ManifestError(f"{where}: manifest.json entry needs Config and Layers")
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
    store.put(config_data, config_digest, f"{where} config")
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG, "digest": str(config_digest), "size": len(config_data)},
        "layers": layers,
    }, sort_keys=True).encode()
    manifest_digest = Digest.of(manifest)
    store.put(manifest, manifest_digest, f"{where} manifest")
    record = ImageRecord(name or str(manifest_digest), manifest_digest, config_digest)
    store.tag(record)
    return record
