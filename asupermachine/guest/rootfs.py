"""The built-in root filesystem: Debian's static busybox in an erofs disk image, cached by content hash.

It is what a VM runs when no image is given, so that ``exec(["sh", "-c", ...])``
works with zero flags.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .._errors import AssetError
from ._cache import build_once, cache_root, content_key, file_digest

BUSYBOX = Path("/bin/busybox")
_RECIPE_VERSION = b"1"
PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "daemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
)
GROUP = "root:x:0:\ndaemon:x:1:\nnogroup:x:65534:\n"
# Directories every root needs, with their modes.
DIRECTORIES = {"dev": 0o755, "proc": 0o555, "sys": 0o555, "tmp": 0o1777, "root": 0o700, "etc": 0o755}


def ensure_default_root(busybox: Path = BUSYBOX) -> Path:
    """Return the cached busybox root disk (erofs), building it first if needed."""
    if not busybox.is_file():
        raise AssetError(f"{busybox} is missing: install busybox-static (scripts/setup.sh does this)")
    mkfs = shutil.which("mkfs.erofs")
    if mkfs is None:
        raise AssetError("mkfs.erofs is missing: install erofs-utils (scripts/setup.sh does this)")
    key = content_key(_RECIPE_VERSION, file_digest(busybox), PASSWD.encode(), GROUP.encode())
    target = cache_root() / "rootfs" / key / "busybox.erofs"

    def build(staging: Path) -> None:
        tree = staging.parent / "tree"
        populate_busybox_tree(tree, busybox)
        _run([mkfs, "--all-root", "-T0", str(staging / target.name), str(tree)])

    return build_once(target, build)


def populate_busybox_tree(tree: Path, busybox: Path) -> None:
    """Write a minimal root into ``tree``: busybox, a link per applet, users and groups."""
    tree.mkdir()
    for name, mode in DIRECTORIES.items():
        (tree / name).mkdir()
        (tree / name).chmod(mode)
    (tree / "bin").mkdir()
    shutil.copyfile(busybox, tree / "bin" / "busybox")
    (tree / "bin" / "busybox").chmod(0o755)
    listing = _run([str(busybox), "--list-full"])
    for applet in listing.split():
        link = tree / applet
        if applet == "bin/busybox" or link.exists():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        depth = len(Path(applet).parts) - 1
        link.symlink_to("../" * depth + "bin/busybox")
    (tree / "etc" / "passwd").write_text(PASSWD)
    (tree / "etc" / "group").write_text(GROUP)


def _run(cmd: list[str]) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise AssetError(f"{' '.join(cmd)} failed:\n{result.stderr[-3000:]}")
    return result.stdout
