"""The built-in default image: Debian's static busybox as a one-layer OCI image layout, cached by content hash.

It is what a VM runs when no image is given, so that ``exec(["sh", "-c", ...])``
works with zero flags and no registry; it goes through the same store and
root-disk path as any other image.
"""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

from .._cache import build_once, cache_root, content_key, file_digest
from .._environment import DEFAULT_PATH
from .._errors import AssetError
from .digest import Digest
from .manifest import HOST_PLATFORM, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, Manifest, parse_document
from .rootdisk import build_root_disk, root_disk_path
from .sources import OCI_LAYER_TAR, REF_NAME_ANNOTATION, import_oci_layout
from .store import Store

BUSYBOX = Path("/bin/busybox")
BUILTIN_TAG = "latest"
_RECIPE_VERSION = b"2"
PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "daemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
)
GROUP = "root:x:0:\ndaemon:x:1:\nnogroup:x:65534:\n"
# Directories every root needs, with their modes.
DIRECTORIES = {"bin": 0o755, "dev": 0o755, "etc": 0o755, "proc": 0o555, "root": 0o700, "sys": 0o555, "tmp": 0o1777}


def busybox_layer(busybox: bytes, applets: list[str]) -> bytes:
    """A deterministic tar: the root's directories, busybox, a symlink per applet, users and groups."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        directories = dict(DIRECTORIES)
        for applet in applets:
            for depth in range(1, len(Path(applet).parts)):
                directories.setdefault("/".join(Path(applet).parts[:depth]), 0o755)
        for name, mode in sorted(directories.items()):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
        files = {"bin/busybox": (busybox, 0o755), "etc/passwd": (PASSWD.encode(), 0o644),
                 "etc/group": (GROUP.encode(), 0o644)}
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
        for applet in sorted(set(applets) - set(files)):
            info = tarfile.TarInfo(applet)
            info.type = tarfile.SYMTYPE
            info.linkname = "../" * (len(Path(applet).parts) - 1) + "bin/busybox"
            tar.addfile(info)
    return buffer.getvalue()


def ensure_builtin_layout(busybox: Path = BUSYBOX) -> Path:
    """The OCI image layout directory of the built-in image, built first if needed."""
    if not busybox.is_file():
        raise AssetError(f"{busybox} is missing: install busybox-static (scripts/setup.sh does this)")
    key = content_key(_RECIPE_VERSION, file_digest(busybox), PASSWD.encode(), GROUP.encode())
    index_path = cache_root() / "builtin" / key / "index.json"

    def build(staging: Path) -> None:
        listing = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True, check=True).stdout
        layer = busybox_layer(busybox.read_bytes(), listing.split())
        layer_digest = Digest.of(layer)
        config = _json({
            "architecture": HOST_PLATFORM.architecture, "os": HOST_PLATFORM.os,
            "config": {"Cmd": ["sh"], "Env": [f"PATH={DEFAULT_PATH}"], "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": [str(layer_digest)]},
            "history": [{"created_by": "asupermachine: Debian's busybox-static, its applets, users and groups"}],
        })
        manifest = _json({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": str(Digest.of(config)), "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER_TAR, "digest": str(layer_digest), "size": len(layer)}],
        })
        index = _json({
            "schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": str(Digest.of(manifest)), "size": len(manifest),
                           "annotations": {REF_NAME_ANNOTATION: BUILTIN_TAG}}],
        })
        blobs = staging / "blobs" / "sha256"
        blobs.mkdir(parents=True)
        for blob in (layer, config, manifest):
            (blobs / Digest.of(blob).hex).write_bytes(blob)
        (staging / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
        (staging / index_path.name).write_bytes(index)

    return build_once(index_path, build).parent


def ensure_default_root(store: Store | None = None) -> Path:
    """The built-in image's root disk: its layout imported into the store, then built (blocking)."""
    store = store or Store()
    layout = ensure_builtin_layout()
    index = parse_document((layout / "index.json").read_bytes(), OCI_INDEX)
    assert not isinstance(index, Manifest), "the builtin layout's index.json is an index"
    manifest_digest = index.manifests[0].digest
    manifest = parse_document((layout / "blobs" / "sha256" / manifest_digest.hex).read_bytes())
    assert isinstance(manifest, Manifest)
    cached = root_disk_path(store, manifest.config.digest)
    if cached.is_file():
        return cached
    import_oci_layout(layout, BUILTIN_TAG, HOST_PLATFORM, store)
    return build_root_disk(store, manifest)


def _json(document: object) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
