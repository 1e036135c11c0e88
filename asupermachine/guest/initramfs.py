"""Build the boot initramfs: the project's static ``init`` and ``agent``, cached by content hash.

The user's files come from a root disk (see :mod:`.rootfs`), never from here.
"""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

from .._cache import build_once, cache_root, content_key
from .._core.cpio import CpioEntry, cpio_archive
from .._errors import AssetError

INIT_SOURCE = Path(__file__).parent / "init" / "init.c"
AGENT_SOURCE = Path(__file__).parent / "agent" / "agent.c"
INCLUDE_DIR = Path(__file__).parent / "include"
# Prefer musl: a static glibc init is ~40x larger, and every initramfs byte is
# copied by the (emulated, under software KVM) guest kernel at boot.
C_COMPILERS = ("musl-gcc", "gcc")
CFLAGS = ("-static", "-Os", "-s", "-Wall", "-Wextra", "-Werror", f"-I{INCLUDE_DIR}")
_RECIPE_VERSION = b"3"
READY_MARKER = "asupermachine-init: ready"
# Linux's character device numbers for /dev/console (Documentation/admin-guide/devices.txt).
CONSOLE_MAJOR, CONSOLE_MINOR = 5, 1


def compiler() -> str:
    for name in C_COMPILERS:
        if shutil.which(name):
            return name
    raise AssetError("no C compiler found: install musl-tools (scripts/setup.sh does this)")


def build_static_binary(source: Path, output: Path) -> None:
    """Compile one C file into a static executable."""
    cmd = [compiler(), *CFLAGS, "-o", str(output), str(source)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise AssetError(f"building {source.name} failed ({' '.join(cmd)}):\n{result.stderr[-3000:]}")


def initramfs_key() -> str:
    sources = [INIT_SOURCE, AGENT_SOURCE, *sorted(INCLUDE_DIR.glob("*.h"))]
    return content_key(_RECIPE_VERSION, compiler().encode(), *(p.name.encode() + p.read_bytes() for p in sources))


def initramfs_entries(init: bytes, agent: bytes) -> list[CpioEntry]:
    """Members of the initramfs: ``/init``, ``/agent`` and ``/dev/console``."""
    directory = stat.S_IFDIR | 0o755
    entries = [
        CpioEntry("dev", directory),
        CpioEntry("dev/console", stat.S_IFCHR | 0o600, rdev_major=CONSOLE_MAJOR, rdev_minor=CONSOLE_MINOR),
        CpioEntry("proc", directory),
        CpioEntry("sys", directory),
        CpioEntry("tmp", stat.S_IFDIR | 0o1777),
        CpioEntry("init", stat.S_IFREG | 0o755, init),
        CpioEntry("agent", stat.S_IFREG | 0o755, agent),
    ]
    return entries


def ensure_initramfs() -> Path:
    """Return the cached initramfs, building it first if needed."""
    target = cache_root() / "initramfs" / initramfs_key() / "initramfs.cpio"

    def build(staging: Path) -> None:
        init, agent = staging.parent / "init", staging.parent / "agent"
        build_static_binary(INIT_SOURCE, init)
        build_static_binary(AGENT_SOURCE, agent)
        entries = initramfs_entries(init.read_bytes(), agent.read_bytes())
        (staging / target.name).write_bytes(cpio_archive(entries))

    return build_once(target, build)
