"""``docker load`` for the store: every image of an OCI layout, OCI archive or docker archive, by its own names.

An image is named as its source names it: the ``io.containerd.image.name``
annotation (docker 25+ and containerd archives), a ``org.opencontainers.image.ref.name``
that is a whole reference (``skopeo copy ... oci-archive:FILE:name:tag``), or
the ``RepoTags`` of a ``docker save`` archive; names are normalised as docker
does (``app:1`` is ``docker.io/library/app:1``). An image with none of these,
or only a bare tag, is named by its manifest digest. Blocking: run in a worker thread.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from .._errors import ImageError, InvalidReference
from .manifest import Descriptor, Platform
from .reference import Reference
from .sources import (
    REF_NAME_ANNOTATION,
    OpenBlob,
    archived_layout,
    import_candidates,
    import_legacy_entry,
    is_layout,
    layout_blobs,
    layout_index,
    legacy_entries,
    open_archive,
)
from .store import ImageRecord, Store

CONTAINERD_NAME_ANNOTATION = "io.containerd.image.name"


def load_images(path: Path, platform: Platform, store: Store) -> list[ImageRecord]:
    """Store every image in ``path``: an OCI layout directory, an OCI archive or a docker archive."""
    where = str(path)
    if path.is_dir():
        if not is_layout({child.name for child in path.iterdir()}):
            raise ImageError(f"{path} is a directory but not an OCI image layout (no oci-layout or index.json)")
        return _load_layout(layout_blobs(path), (path / "index.json").read_bytes(), platform, store, where)
    if not path.is_file():
        raise ImageError(f"{path}: no such file or directory")
    with open_archive(path, "an image archive (OCI or docker)") as (names, open_member):
        if is_layout(names):
            return _load_layout(*archived_layout(open_member), platform, store, where)
        if "manifest.json" in names:
            return [
                _named(
                    _repo_tags(entry), store,
                    functools.partial(import_legacy_entry, open_member, entry, platform, store, where=where),
                )
                for entry in legacy_entries(open_member, where)
            ]
    raise ImageError(f"{path} is neither an OCI archive nor a docker archive (no index.json or manifest.json)")


def _load_layout(
    open_blob: OpenBlob, index_data: bytes, platform: Platform, store: Store, where: str
) -> list[ImageRecord]:
    return [
        _named(
            _descriptor_names(descriptor), store,
            functools.partial(import_candidates, open_blob, [descriptor], platform, store, where=where),
        )
        for descriptor in layout_index(index_data, where).manifests
    ]


def _descriptor_names(descriptor: Descriptor) -> list[str]:
    full = descriptor.annotations.get(CONTAINERD_NAME_ANNOTATION)
    if full:
        return [full]
    ref_name = descriptor.annotations.get(REF_NAME_ANNOTATION, "")
    return [ref_name] if any(mark in ref_name for mark in ":/@") else []


def _repo_tags(entry: dict[str, object]) -> list[str]:
    tags = entry.get("RepoTags")
    return [tag for tag in tags if isinstance(tag, str)] if isinstance(tags, list) else []


def _named(names: list[str], store: Store, store_as: Callable[[str | None], ImageRecord]) -> ImageRecord:
    """The image ``store_as`` stores under the first of ``names`` (its digest if none), tagged with the rest."""
    normalised = [_normalised(name) for name in names]
    record = store_as(normalised[0] if normalised else None)
    for name in normalised[1:]:
        store.tag(ImageRecord(name, record.manifest, record.config))
    return record


def _normalised(name: str) -> str:
    try:
        return str(Reference.parse(name))
    except InvalidReference as error:
        raise ImageError(f"the archive names an image {name!r}, which is not a valid reference: {error}") from None
