"""Manifests, indexes and image configs of the OCI image spec and Docker's v2 schema 2, sans-IO."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .._errors import ManifestError, PlatformNotFound
from .digest import Digest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
# What a registry is asked for, best first.
ACCEPTED_TYPES = (*INDEX_TYPES, *MANIFEST_TYPES)
LAYER_TYPE_PREFIXES = ("application/vnd.oci.image.layer.", "application/vnd.docker.image.rootfs.")
MAX_DOCUMENT = 4 << 20  # manifests, indexes and configs are small; anything larger is refused


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``os/arch[/variant]``, e.g. ``linux/amd64``."""
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"{text!r} is not a platform (os/arch[/variant])")
        return cls(*parts)

    def __str__(self) -> str:
        return "/".join(part for part in (self.os, self.architecture, self.variant) if part)


LINUX_AMD64 = Platform("linux", "amd64")
LINUX_ARM64 = Platform("linux", "arm64")
HOST_PLATFORM = {"x86_64": LINUX_AMD64, "aarch64": LINUX_ARM64}.get(os.uname().machine, LINUX_AMD64)
"""The images this host's KVM can run: its own architecture's (OCI names, not ``uname -m``'s)."""


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    platform: Platform | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    config: Descriptor
    layers: tuple[Descriptor, ...]


@dataclass(frozen=True)
class Index:
    manifests: tuple[Descriptor, ...]

    def select(self, wanted: Platform) -> Descriptor:
        """The manifest for ``wanted`` (a missing variant matches any); :class:`PlatformNotFound` if none."""
        available = [d for d in self.manifests if d.platform is not None]
        for descriptor in available:
            platform = descriptor.platform
            assert platform is not None
            if (platform.os, platform.architecture) == (wanted.os, wanted.architecture) and (
                not wanted.variant or platform.variant == wanted.variant
            ):
                return descriptor
        names = sorted({str(d.platform) for d in available})
        raise PlatformNotFound(f"no manifest for {wanted} in the index; it offers {', '.join(names) or 'none'}", names)


@dataclass(frozen=True)
class ImageConfig:
    """What the image asks of the process that runs it (the config blob's ``config``)."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    workdir: str = ""
    """The config's ``WorkingDir``."""
    user: str = ""
    exposed_ports: tuple[str, ...] = ()
    platform: Platform = LINUX_AMD64

    @property
    def args(self) -> tuple[str, ...]:
        """Entrypoint followed by cmd, as ``docker run IMAGE`` runs it (the OCI runtime's ``process.args``)."""
        return self.entrypoint + self.cmd


def _load(data: bytes, what: str) -> dict[str, Any]:
    if len(data) > MAX_DOCUMENT:
        raise ManifestError(f"{what} of {len(data)} bytes is larger than {MAX_DOCUMENT}")
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise ManifestError(f"{what} is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise ManifestError(f"{what} is not a JSON object")
    return document


def _descriptor(raw: object, what: str) -> Descriptor:
    if not isinstance(raw, dict):
        raise ManifestError(f"{what}: a descriptor is not an object")
    media_type, digest, size = raw.get("mediaType"), raw.get("digest"), raw.get("size")
    if not isinstance(media_type, str) or not isinstance(digest, str) or not isinstance(size, int) or size < 0:
        raise ManifestError(f"{what}: descriptor needs mediaType, digest and a size")
    platform = None
    if isinstance(raw.get("platform"), dict):
        p = raw["platform"]
        platform = Platform(str(p.get("os", "")), str(p.get("architecture", "")), str(p.get("variant", "")))
    raw_annotations = raw.get("annotations")
    annotations = (
        {str(k): str(v) for k, v in raw_annotations.items()} if isinstance(raw_annotations, dict) else {}
    )
    return Descriptor(media_type, Digest.parse(digest), size, platform, annotations)


def parse_document(data: bytes, media_type: str = "") -> Manifest | Index:
    """A manifest or an index; ``media_type`` (from the registry) is used when the document omits it."""
    document = _load(data, "manifest")
    kind = document.get("mediaType") or media_type
    if kind not in ACCEPTED_TYPES:
        # OCI allows an index or manifest without mediaType: tell them apart by shape.
        kind = OCI_INDEX if "manifests" in document else OCI_MANIFEST if "layers" in document else kind
    if document.get("schemaVersion") != 2:
        raise ManifestError(f"manifest schemaVersion {document.get('schemaVersion')!r} is not 2")
    if kind in INDEX_TYPES:
        manifests = document.get("manifests")
        if not isinstance(manifests, list):
            raise ManifestError("index has no manifests list")
        return Index(tuple(_descriptor(m, "index") for m in manifests))
    if kind in MANIFEST_TYPES:
        layers = document.get("layers")
        if not isinstance(layers, list):
            raise ManifestError("manifest has no layers list")
        parsed = tuple(_descriptor(layer, "manifest layer") for layer in layers)
        for layer in parsed:
            if not layer.media_type.startswith(LAYER_TYPE_PREFIXES):
                raise ManifestError(f"layer media type {layer.media_type!r} is not an image layer")
        return Manifest(_descriptor(document.get("config"), "manifest config"), parsed)
    raise ManifestError(f"unsupported manifest media type {kind!r}")


def parse_media_type(data: bytes) -> str:
    """A stored manifest's media type: what it says, else OCI's (both kinds the store keeps say theirs)."""
    media_type = _load(data, "manifest").get("mediaType")
    return media_type if isinstance(media_type, str) and media_type in MANIFEST_TYPES else OCI_MANIFEST


def _strings(value: object, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ManifestError(f"image config {what} is not a list of strings")
    return tuple(value)


def parse_config(data: bytes) -> ImageConfig:
    """The runtime part of an image config blob."""
    document = _load(data, "image config")
    config = document.get("config") or {}
    if not isinstance(config, dict):
        raise ManifestError("image config 'config' is not an object")
    env: dict[str, str] = {}
    for entry in _strings(config.get("Env"), "Env"):
        name, _, value = entry.partition("=")
        if name:
            env[name] = value
    ports = config.get("ExposedPorts") or {}
    if not isinstance(ports, dict):
        raise ManifestError("image config ExposedPorts is not an object")
    return ImageConfig(
        entrypoint=_strings(config.get("Entrypoint"), "Entrypoint"),
        cmd=_strings(config.get("Cmd"), "Cmd"),
        env=env,
        workdir=str(config.get("WorkingDir") or ""),
        user=str(config.get("User") or ""),
        exposed_ports=tuple(sorted(ports)),
        platform=Platform(str(document.get("os", "linux")), str(document.get("architecture", "amd64")),
                          str(document.get("variant", ""))),
    )
