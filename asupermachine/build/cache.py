"""The build cache: a step's layer by a key made as docker makes it, reused across builds.

A key hashes the key of the step before (so the parent image and every
instruction up to here), the step's instruction as expanded, and what it reads:
the digests of the files a COPY takes, the build arguments a RUN sees. An entry
names a layer in the image store; one whose blob was pruned is a miss.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass

from ..image.digest import Digest
from ..image.manifest import Descriptor
from ..image.store import Store
from .image_state import Layer

KEY_VERSION = "1"


def step_key(parent: str, *parts: object) -> str:
    """The key of a step after ``parent``'s, from what decides its result."""
    text = json.dumps([KEY_VERSION, parent, *parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class CachedStep:
    layer: Layer | None
    created: str


class StepCache:
    """Entries beside the store whose layers they name (``build-cache/``), one JSON file per key, each
    written whole by a rename."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._root = store.root / "build-cache"

    def get(self, key: str) -> CachedStep | None:
        try:
            entry = json.loads((self._root / f"{key}.json").read_text())
            layer = None
            if entry["layer"] is not None:
                raw = entry["layer"]
                descriptor = Descriptor(raw["mediaType"], Digest.parse(raw["digest"]), int(raw["size"]))
                if not self._store.has(descriptor.digest):
                    return None
                layer = Layer(descriptor, Digest.parse(raw["diffId"]))
            return CachedStep(layer, str(entry["created"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def put(self, key: str, step: CachedStep) -> None:
        layer = step.layer
        entry = {
            "created": step.created,
            "layer": None if layer is None else {
                "mediaType": layer.descriptor.media_type, "digest": str(layer.descriptor.digest),
                "size": layer.descriptor.size, "diffId": str(layer.diff_id),
            },
        }
        self._root.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self._root, prefix="entry-")
        with os.fdopen(fd, "w") as file:
            json.dump(entry, file)
        os.replace(name, self._root / f"{key}.json")
