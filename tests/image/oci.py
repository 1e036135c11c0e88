"""The tests' own OCI image writer and a real registry (Debian's docker-registry) to push to."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
GZIP_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


@dataclass
class Entry:
    name: str
    kind: bytes = tarfile.REGTYPE
    data: bytes = b""
    mode: int = 0o644
    linkname: str = ""
    uid: int = 0
    gid: int = 0
    devmajor: int = 0
    devminor: int = 0


@dataclass
class ImageSpec:
    layers: Sequence[Sequence[Entry] | bytes]  # entries, or a ready tar
    config: dict[str, object] = field(default_factory=dict)
    architecture: str = "amd64"


def layer_tar(entries: Sequence[Entry]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.type, info.mode, info.linkname = entry.kind, entry.mode, entry.linkname
            info.uid, info.gid, info.devmajor, info.devminor = entry.uid, entry.gid, entry.devmajor, entry.devminor
            info.size = len(entry.data)
            tar.addfile(info, io.BytesIO(entry.data) if entry.data else None)
    return buffer.getvalue()


def _blob(root: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (root / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def _image(root: Path, spec: ImageSpec) -> dict[str, object]:
    tars = [layer if isinstance(layer, bytes) else layer_tar(layer) for layer in spec.layers]
    config = json.dumps({
        "architecture": spec.architecture, "os": "linux", "config": spec.config,
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(t).hexdigest()}" for t in tars]},
    }).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **_blob(root, config)},
        "layers": [{"mediaType": GZIP_LAYER, **_blob(root, gzip.compress(t, mtime=0))} for t in tars],
    }).encode()
    return {"mediaType": OCI_MANIFEST, **_blob(root, manifest),
            "platform": {"os": "linux", "architecture": spec.architecture}}


def write_layout(root: Path, tag: str, *specs: ImageSpec) -> Path:
    """An OCI layout holding ``specs`` under ``tag``: one image, or an index of several platforms."""
    root.mkdir(parents=True, exist_ok=True)
    descriptors = [_image(root, spec) for spec in specs]
    if len(descriptors) == 1:
        top = descriptors[0]
    else:
        index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors}).encode()
        top = {"mediaType": OCI_INDEX, **_blob(root, index)}
    top = {**top, "annotations": {"org.opencontainers.image.ref.name": tag}}
    top.pop("platform", None)
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [top]}))
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return root


def skopeo_copy(source: str, destination: str, *options: str) -> None:
    subprocess.run(["skopeo", "copy", "--quiet", "--all", *options, source, destination],
                   check=True, capture_output=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def running_registry(work: Path, htpasswd: Path | None = None) -> Iterator[str]:
    """Debian's docker-registry on 127.0.0.1 with a random port and its own storage; yields host:port."""
    port = _free_port()
    work.mkdir(parents=True, exist_ok=True)
    auth = f"auth:\n  htpasswd:\n    realm: test\n    path: {htpasswd}\n" if htpasswd else ""
    config = work / "config.yml"
    config.write_text(
        f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {work / 'storage'}\n"
        f"  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}"
    )
    server = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/").status_code in (200, 401):
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("docker-registry did not start")
            time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait()


def registry_blob_file(storage: Path, digest: str) -> Path:
    """Where docker-registry's filesystem driver keeps a blob (to tamper with it)."""
    hex_digest = digest.split(":", 1)[1]
    return storage / "docker" / "registry" / "v2" / "blobs" / "sha256" / hex_digest[:2] / hex_digest / "data"
