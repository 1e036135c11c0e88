"""Build the guest kernel from Debian's ``linux-source-6.1`` with the project's config.

The result, an uncompressed ``vmlinux`` ELF, is cached under the user cache dir
by a hash of the source tarball, the config fragment and the patches, so it is
built once per machine and found without flags.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from .._cache import build_once, cache_root, content_key, file_sha256
from .._errors import AssetError

KERNEL_SOURCE_TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")
_HERE = Path(__file__).parent / "kernel"
CONFIG_FRAGMENT = _HERE / "config.fragment"
PATCHES_DIR = _HERE / "patches"
# Bump when the build procedure itself changes in a way that alters the output.
_BUILD_RECIPE_VERSION = b"1"


def _patches() -> list[Path]:
    return sorted(PATCHES_DIR.glob("*.patch"))


def kernel_key(tarball: Path = KERNEL_SOURCE_TARBALL) -> str:
    """The cache key of the kernel built from ``tarball`` with our config and patches."""
    if not tarball.is_file():
        raise AssetError(
            f"kernel source {tarball} is missing: install it with "
            "`apt-get install linux-source-6.1` (scripts/setup.sh does this)"
        )
    parts = [_BUILD_RECIPE_VERSION, bytes.fromhex(file_sha256(tarball)), CONFIG_FRAGMENT.read_bytes()]
    parts += [p.name.encode() + p.read_bytes() for p in _patches()]
    return content_key(*parts)


def cached_kernel_path(key: str) -> Path:
    return cache_root() / "kernel" / key / "vmlinux"


def ensure_kernel(tarball: Path = KERNEL_SOURCE_TARBALL, *, jobs: int | None = None) -> Path:
    """Return the cached ``vmlinux``, building it first if needed (minutes, once)."""
    target = cached_kernel_path(kernel_key(tarball))
    return build_once(target, lambda staging: _build(tarball, staging, jobs or os.cpu_count() or 1))


def _run(cmd: list[str], cwd: Path) -> None:
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    result = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        tail = result.stdout.decode(errors="replace")[-4000:]
        raise AssetError(f"kernel build step {' '.join(cmd)!r} failed:\n{tail}")


def _build(tarball: Path, staging: Path, jobs: int) -> None:
    print(f"building the guest kernel from {tarball} (once, takes minutes)", file=sys.stderr)
    with tarfile.open(tarball) as tar:
        tar.extractall(staging.parent, filter="data")
    (src,) = [p for p in staging.parent.iterdir() if p.is_dir() and p != staging]
    for patch in _patches():
        _run(["patch", "-p1", "--forward", "--input", str(patch)], src)
    make = ["make", "ARCH=x86_64", f"-j{jobs}"]
    _run([*make, "tinyconfig"], src)
    _run(["scripts/kconfig/merge_config.sh", "-m", ".config", str(CONFIG_FRAGMENT)], src)
    _run([*make, "olddefconfig"], src)
    _check_config(src / ".config")
    _run([*make, "vmlinux"], src)
    shutil.copyfile(src / "vmlinux", staging / "vmlinux")
    shutil.copyfile(src / ".config", staging / "config")


def _check_config(config: Path) -> None:
    """Fail if Kconfig silently dropped an option the fragment asks for."""
    wanted = {}
    for line in CONFIG_FRAGMENT.read_text().splitlines():
        line = line.strip()
        if line.startswith("CONFIG_") and "=" in line:
            name, value = line.split("=", 1)
            wanted[name] = value
    have = {}
    for line in config.read_text().splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            name, value = line.split("=", 1)
            have[name] = value
        elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
            have[line[2:].split()[0]] = "n"
    lost = [f"{k}={v} (got {have.get(k, 'n')})" for k, v in wanted.items() if have.get(k, "n") != v]
    if lost:
        raise AssetError("kernel config options did not stick: " + ", ".join(lost))
