"""A stage's image as the build goes: its layers, its config and history, and the documents they make (sans-IO).

The config is docker's (the OCI image config's ``config`` object, the same
keys), kept as the base image wrote it where the build does not touch it.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from .._errors import ManifestError
from ..image.digest import Digest
from ..image.manifest import OCI_CONFIG, OCI_MANIFEST, Descriptor, Platform

OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_TYPES = {
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar": OCI_LAYER_TAR,
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip":
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
}
"""Docker's layer media types and the OCI ones an OCI manifest names them by."""
EPOCH = "1970-01-01T00:00:00Z"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Layer:
    descriptor: Descriptor
    diff_id: Digest
    """The digest of its uncompressed tar, as the config's ``rootfs.diff_ids`` lists it."""


@dataclass(frozen=True)
class ImageState:
    """An image as far as a stage has built it."""

    document: Mapping[str, Any]
    """The base image's config document: what the build does not change comes from it."""
    layers: tuple[Layer, ...] = ()
    config: Mapping[str, Any] = field(default_factory=dict)
    history: tuple[Mapping[str, Any], ...] = ()

    @classmethod
    def scratch(cls, platform: Platform) -> ImageState:
        document = {"architecture": platform.architecture, "os": platform.os, "config": {}}
        if platform.variant:
            document["variant"] = platform.variant
        return cls(document)

    @classmethod
    def from_image(cls, config_document: bytes, layers: tuple[Descriptor, ...]) -> ImageState:
        """The state of a stored image: its config document and its manifest's layers."""
        document = json.loads(config_document)
        diff_ids = document.get("rootfs", {}).get("diff_ids", [])
        if len(diff_ids) != len(layers):
            raise ManifestError(f"the image config lists {len(diff_ids)} layers, its manifest {len(layers)}")
        kept = tuple(
            Layer(replace(d, media_type=OCI_TYPES.get(d.media_type, d.media_type)), Digest.parse(diff))
            for d, diff in zip(layers, diff_ids, strict=True)
        )
        history = tuple(document.get("history") or ())
        missing = len(kept) - sum(not entry.get("empty_layer") for entry in history)
        if missing > 0:  # buildah's --layers, among others, counts on one entry per layer
            history = tuple({"created": str(document.get("created") or EPOCH), "created_by": "(the base image)"}
                            for _ in range(missing)) + history
        return cls(document, kept, dict(document.get("config") or {}), history)

    def with_config(self, **changes: Any) -> ImageState:
        """The state with ``config`` keys set (None removes one)."""
        config = {**self.config, **changes}
        return replace(self, config={key: value for key, value in config.items() if value is not None})

    def with_history(self, created_by: str, created: str, layer: Layer | None = None) -> ImageState:
        entry: dict[str, Any] = {"created": created, "created_by": created_by}
        if layer is None:
            entry["empty_layer"] = True
        layers = self.layers if layer is None else (*self.layers, layer)
        return replace(self, layers=layers, history=(*self.history, entry))

    @property
    def env(self) -> dict[str, str]:
        """The config's ``Env`` as a mapping, in order."""
        found: dict[str, str] = {}
        for entry in self.config.get("Env") or ():
            name, _, value = str(entry).partition("=")
            found[name] = value
        return found

    @property
    def created(self) -> str:
        """When the newest history entry was made (the base image's time without one)."""
        times = [str(entry.get("created", "")) for entry in self.history if entry.get("created")]
        return max(times, default=str(self.document.get("created") or EPOCH))

    def config_document(self) -> bytes:
        document = copy.deepcopy(dict(self.document))
        document.update({
            "created": self.created,
            "config": dict(self.config),
            "rootfs": {"type": "layers", "diff_ids": [str(layer.diff_id) for layer in self.layers]},
            "history": [dict(entry) for entry in self.history],
        })
        return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()

    def manifest_document(self, config: bytes) -> bytes:
        layers = [
            {"mediaType": layer.descriptor.media_type, "digest": str(layer.descriptor.digest),
             "size": layer.descriptor.size}
            for layer in self.layers
        ]
        manifest = {
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": str(Digest.of(config)), "size": len(config)},
            "layers": layers,
        }
        return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
