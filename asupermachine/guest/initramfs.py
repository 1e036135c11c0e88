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
from .arch import GuestArch, host_arch

INIT_SOURCE = Path(__file__).parent / "init" / "init.c"
AGENT_SOURCE = Path(__file__).parent / "agent" / "agent.c"
INCLUDE_DIR = Path(__file__).parent / "include"
CFLAGS = ("-static", "-Os", "-s", "-Wall", "-Wextra", "-Werror", f"-I{INCLUDE_DIR}")
_RECIPE_VERSION = b"4"
READY_MARKER = "asupermachine-init: ready"
# Linux's character device numbers for /dev/console (Documentation/admin-guide/devices.txt).
CONSOLE_MAJOR, CONSOLE_MINOR = 5, 1


def compiler(arch: GuestArch) -> list[str]:
    """The command that compiles for ``arch``: Debian's gcc for it (a cross compiler on another host),
    with musl where it is installed (``musl-dev`` of that architecture), else glibc.

    musl is preferred: a static glibc init is ~40x larger, and every initramfs byte
    is copied by the (emulated, under software KVM) guest kernel at boot.
    """
    gcc = f"{arch.cross_compile}gcc"
    if shutil.which(gcc) is None:
        raise AssetError(f"{gcc} is missing: install it with `apt-get install gcc-{arch.gnu_triplet}`")
    musl_specs = Path("/usr/lib") / arch.gnu_triplet.replace("-gnu", "-musl") / "musl-gcc.specs"
    return [gcc, "-specs", str(musl_specs)] if musl_specs.is_file() else [gcc]


def build_static_binary(source: Path, output: Path, arch: GuestArch | None = None) -> None:
    """Compile one C file into a static executable for ``arch`` (the host's by default)."""
    cmd = [*compiler(arch or host_arch()), *CFLAGS, "-o", str(output), str(source)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise AssetError(f"building {source.name} failed ({' '.join(cmd)}):\n{result.stderr[-3000:]}")


def initramfs_key(arch: GuestArch) -> str:
    sources = [INIT_SOURCE, AGENT_SOURCE, *sorted(INCLUDE_DIR.glob("*.h"))]
    toolchain = " ".join(compiler(arch)).encode()
    contents = (p.name.encode() + p.read_bytes() for p in sources)
    return content_key(_RECIPE_VERSION, arch.name.encode(), toolchain, *contents)


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


def ensure_initramfs(arch: GuestArch | None = None) -> Path:
    """Return the cached initramfs for ``arch`` (the host's by default), building it first if needed."""
    arch = arch or host_arch()
    target = cache_root() / "initramfs" / initramfs_key(arch) / "initramfs.cpio"

    def build(staging: Path) -> None:
        init, agent = staging.parent / "init", staging.parent / "agent"
        build_static_binary(INIT_SOURCE, init, arch)
        build_static_binary(AGENT_SOURCE, agent, arch)
        entries = initramfs_entries(init.read_bytes(), agent.read_bytes())
        (staging / target.name).write_bytes(cpio_archive(entries))

    return build_once(target, build)
