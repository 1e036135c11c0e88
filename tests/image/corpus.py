"""Images made by real tools (Debian's umoci and skopeo), for differential tests against ``umoci unpack``.

Each builder runs the tools the way a person would and returns an OCI layout
with its tag; the variants re-encode one image through skopeo (oci-archive,
docker-archive, zstd, uncompressed) so the same tree must come out of each.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from asupermachine._cache import cache_root

from .oci import Entry, ImageSpec, skopeo_copy, write_layout

BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "cat", "id", "ls", "pwd", "test", "echo", "stat")
LONG_NAME = "deep/" + "d" * 90 + "/" + "f" * 120  # past ustar's 100-byte name field: a PAX header


def umoci(*args: str) -> None:
    subprocess.run(["umoci", *args], check=True, capture_output=True)


def _write(path: Path, data: bytes, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)
    return path


def _base_tree(root: Path) -> None:
    """A busybox root with every kind of entry umoci insert records."""
    shutil.copyfile(BUSYBOX, root / "busybox")
    (root / "bin").mkdir(parents=True)
    os.replace(root / "busybox", root / "bin" / "busybox")
    (root / "bin" / "busybox").chmod(0o755)
    for applet in APPLETS:
        (root / "bin" / applet).symlink_to("busybox")
    _write(root / "etc" / "passwd", b"root:x:0:0::/root:/bin/sh\napp:x:1234:5678::/data:/bin/sh\n")
    _write(root / "etc" / "group", b"root:x:0:\ngrp:x:5678:\n")
    tool = _write(root / "usr" / "bin" / "tool", b"#!/bin/sh\necho tool\n", 0o4755)
    os.link(tool, root / "usr" / "bin" / "tool-hardlink")
    (root / "usr" / "bin" / "tool-symlink").symlink_to("tool")
    _write(root / "usr" / "bin" / "sgid", b"sgid", 0o2711)
    data = root / "data"
    _write(data / "owned", b"owned by 1234:5678", 0o640)
    os.chown(data / "owned", 1234, 5678)
    data.chmod(0o1777)
    os.setxattr(data / "owned", "user.origin", b"umoci corpus")
    os.mknod(root / "dev-null", 0o666 | 0o020000, os.makedev(1, 3))
    _write(root / "gone" / "file", b"whited out later")
    _write(root / "gone-dir" / "inner" / "file", b"whole directory whited out later")
    _write(root / "opaque" / "old", b"hidden by an opaque layer")
    _write(root / LONG_NAME, b"long name")


@dataclass(frozen=True)
class Corpus:
    layout: Path
    tag: str


def umoci_image(work: Path, user: str = "1234:5678") -> Corpus:
    """``umoci new`` + several ``insert`` layers (plain, ``--whiteout`` of a file and a directory,
    ``--opaque``) + ``umoci config`` with user, workdir, env, entrypoint and cmd."""
    layout, image = work / "umoci-layout", f"{work / 'umoci-layout'}:base"
    umoci("init", "--layout", str(layout))
    umoci("new", "--image", image)
    base = work / "umoci-base"
    base.mkdir()
    _base_tree(base)
    umoci("insert", "--image", image, str(base), "/")
    umoci("insert", "--image", image, "--whiteout", "/gone/file")
    umoci("insert", "--image", image, "--whiteout", "/gone-dir")
    fresh = work / "umoci-opaque"
    _write(fresh / "new", b"after the opaque marker")
    umoci("insert", "--image", image, "--opaque", str(fresh), "/opaque")
    umoci(
        "config", "--image", image, "--config.user", user, "--config.workingdir", "/data",
        "--config.env", "GREETING=hello from umoci", "--config.entrypoint", "/bin/sh",
        "--config.cmd", "-c", "--config.cmd", "echo from-cmd",
    )
    return Corpus(layout, "base")


def edge_layers_image(work: Path) -> Corpus:
    """Hand-made layers umoci insert cannot write: a hardlink to a lower layer's file, a file
    replaced by a directory and a directory by a file, an empty layer, a whiteout of a whole
    directory followed by new content in it."""
    busybox = Entry("bin/busybox", data=BUSYBOX.read_bytes(), mode=0o755)
    applets = [Entry(f"bin/{name}", tarfile.SYMTYPE, linkname="busybox") for name in APPLETS]
    lower = [
        Entry("bin", tarfile.DIRTYPE), busybox, *applets,
        Entry("lib", tarfile.DIRTYPE), Entry("lib/shared", data=b"shared content", mode=0o600, uid=7, gid=8),
        Entry("was-file", data=b"a file below"),
        Entry("was-dir", tarfile.DIRTYPE), Entry("was-dir/child", data=b"child"),
        Entry("redo", tarfile.DIRTYPE), Entry("redo/old", data=b"old"),
    ]
    upper = [
        Entry("lib/shared-link", tarfile.LNKTYPE, linkname="lib/shared"),
        Entry("was-file", tarfile.DIRTYPE), Entry("was-file/inside", data=b"now a directory"),
        Entry("was-dir", data=b"now a file"),
        Entry(".wh.redo"), Entry("redo", tarfile.DIRTYPE), Entry("redo/new", data=b"new"),
    ]
    layout = write_layout(work / "edge-layout", "edges", ImageSpec([lower, [], upper]))
    return Corpus(layout, "edges")


def skopeo_variants(corpus: Corpus, work: Path) -> dict[str, Path]:
    """The image re-encoded by skopeo: name -> the layout or archive it wrote."""
    source = f"oci:{corpus.layout}:{corpus.tag}"
    variants = {
        "oci-archive": work / "image.oci.tar",
        "docker-archive": work / "image.docker.tar",
        "zstd": work / "zstd-layout",
        "uncompressed": work / "plain-layout",
    }
    skopeo_copy(source, f"oci-archive:{variants['oci-archive']}:test/corpus:1")
    skopeo_copy(source, f"docker-archive:{variants['docker-archive']}:test/corpus:1")
    skopeo_copy(source, f"oci:{variants['zstd']}:{corpus.tag}", "--dest-compress-format", "zstd")
    skopeo_copy(source, f"oci:{variants['uncompressed']}:{corpus.tag}", "--dest-decompress")
    return variants


def umoci_unpack(corpus: Corpus, bundle: Path) -> Path:
    """The reference tree: ``umoci unpack`` of the image; returns its rootfs."""
    umoci("unpack", "--image", f"{corpus.layout}:{corpus.tag}", str(bundle))
    return bundle / "rootfs"


def buildah_images(work: Path) -> dict[str, Path]:
    """``buildah from scratch`` + ``copy`` + ``config`` + ``commit``, pushed to an oci-archive and a
    docker-archive (vfs storage of its own under ``work``, no daemon)."""
    storage = ["--root", str(work / "storage"), "--runroot", str(work / "run"), "--storage-driver", "vfs"]

    def buildah(*args: str) -> str:
        done = subprocess.run(["buildah", *storage, *args], check=True, capture_output=True, text=True)
        return done.stdout.strip()

    context = work / "context"
    _write(context / "hello.txt", b"hello from buildah\n")
    container = buildah("from", "scratch")
    buildah("copy", container, str(BUSYBOX), "/bin/busybox")
    buildah("copy", container, str(context / "hello.txt"), "/srv/hello.txt")
    buildah("config", "--workingdir", "/srv", "--env", "GREETING=hello from buildah", "--user", "4321:4321",
            "--cmd", '["/bin/busybox", "cat", "/srv/hello.txt"]', container)
    buildah("commit", container, "corpus-buildah:1")
    archives = {"buildah-oci-archive": work / "buildah.oci.tar", "buildah-docker-archive": work / "buildah.docker.tar"}
    buildah("push", "corpus-buildah:1", f"oci-archive:{archives['buildah-oci-archive']}:corpus-buildah:1")
    buildah("push", "corpus-buildah:1", f"docker-archive:{archives['buildah-docker-archive']}:corpus-buildah:1")
    return archives


def layout_of_archive(archive: Path, directory: Path, tag: str) -> Corpus:
    """An OCI archive unpacked into the layout it holds (for ``umoci unpack``)."""
    with tarfile.open(archive) as tar:
        tar.extractall(directory, filter="data")
    return Corpus(directory, tag)


DEBIAN_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
DEBIAN_SUITE = "bookworm"
DEBOOTSTRAP_RECIPE = "minbase-1"


def debian_mirror() -> str:
    """The Debian archive this machine's apt uses (the first ``URIs:`` of its deb822 sources)."""
    for line in DEBIAN_SOURCES.read_text().splitlines():
        if line.startswith("URIs:"):
            return line.split()[1]
    raise RuntimeError(f"no URIs: line in {DEBIAN_SOURCES}")


def python_image() -> Corpus:
    """The debootstrap image with python3 and pip, built once into the user cache (the nested pass has the
    host build it: the L1's writes would go to its tmpfs, every run)."""
    return debootstrap_image(cache_root() / "test-corpus", ("python3", "python3-pip"))


def debootstrap_image(cache: Path, include: tuple[str, ...] = ()) -> Corpus:
    """A Debian root made with ``debootstrap --variant=minbase`` (usrmerge symlinks, hardlinks,
    setuid binaries, thousands of files) and the packages ``include`` names, as one ``umoci insert``
    layer. Built once into ``cache``."""
    layout = cache / "-".join(["debootstrap", DEBIAN_SUITE, DEBOOTSTRAP_RECIPE, *include])
    if (layout / "index.json").is_file():
        return Corpus(layout, DEBIAN_SUITE)
    cache.mkdir(parents=True, exist_ok=True)
    staging = cache / f"{layout.name}.building-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    root = staging / "root"
    packages = [f"--include={','.join(include)}"] if include else []
    subprocess.run(["debootstrap", "--variant=minbase", *packages, DEBIAN_SUITE, str(root), debian_mirror()],
                   check=True, capture_output=True)
    image = f"{staging / 'layout'}:{DEBIAN_SUITE}"
    umoci("init", "--layout", str(staging / "layout"))
    umoci("new", "--image", image)
    umoci("insert", "--image", image, str(root), "/")
    umoci("config", "--image", image, "--config.env", "PATH=/usr/sbin:/usr/bin:/sbin:/bin")
    os.replace(staging / "layout", layout)
    shutil.rmtree(staging)
    return Corpus(layout, DEBIAN_SUITE)
