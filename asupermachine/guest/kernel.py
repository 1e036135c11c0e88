"""Build the guest kernel from Debian's ``linux-source-6.1`` with the project's config.

The result, an uncompressed ``vmlinux`` ELF for x86_64 or an ``Image`` for arm64
(cross-built with Debian's cross toolchain on another host), is cached under the
user cache dir by a hash of the architecture, the source tarball, the config
fragments and the patches, so it is built once per machine and found without flags.
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
from .._tarfile import extract_data
from .arch import GuestArch, host_arch

KERNEL_SOURCE_TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")
_HERE = Path(__file__).parent / "kernel"
PATCHES_DIR = _HERE / "patches"
# Bump when the build procedure itself changes in a way that alters the output.
_BUILD_RECIPE_VERSION = b"2"


def config_fragments(arch: GuestArch) -> list[Path]:
    """What is merged onto ``tinyconfig``, in order: every architecture's options, then ``arch``'s."""
    return [_HERE / "common.fragment", _HERE / f"{arch.name}.fragment"]


def _patches() -> list[Path]:
    return sorted(PATCHES_DIR.glob("*.patch"))


def kernel_key(arch: GuestArch, tarball: Path = KERNEL_SOURCE_TARBALL) -> str:
    """The cache key of the ``arch`` kernel built from ``tarball`` with our config and patches."""
    if not tarball.is_file():
        raise AssetError(
            f"kernel source {tarball} is missing: install it with "
            "`apt-get install linux-source-6.1` (scripts/setup.sh does this)"
        )
    parts = [_BUILD_RECIPE_VERSION, arch.name.encode(), bytes.fromhex(file_sha256(tarball))]
    parts += [p.read_bytes() for p in config_fragments(arch)]
    parts += [p.name.encode() + p.read_bytes() for p in _patches()]
    return content_key(*parts)


def cached_kernel_path(arch: GuestArch, key: str) -> Path:
    return cache_root() / "kernel" / key / Path(arch.kernel_output).name


def ensure_kernel(
    arch: GuestArch | None = None, tarball: Path = KERNEL_SOURCE_TARBALL, *, jobs: int | None = None
) -> Path:
    """Return the cached kernel for ``arch`` (the host's by default), building it first if needed (minutes, once)."""
    arch = arch or host_arch()
    target = cached_kernel_path(arch, kernel_key(arch, tarball))
    return build_once(target, lambda staging: _build(arch, tarball, staging, jobs or os.cpu_count() or 1))


def _run(cmd: list[str], cwd: Path) -> None:
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    result = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        tail = result.stdout.decode(errors="replace")[-4000:]
        raise AssetError(f"kernel build step {' '.join(cmd)!r} failed:\n{tail}")


def _build(arch: GuestArch, tarball: Path, staging: Path, jobs: int) -> None:
    compiler = f"{arch.cross_compile}gcc"
    if shutil.which(compiler) is None:
        raise AssetError(f"{compiler} is missing: install it with `apt-get install gcc-{arch.gnu_triplet}`")
    print(f"building the {arch.name} guest kernel from {tarball} (once, takes minutes)", file=sys.stderr)
    with tarfile.open(tarball) as tar:
        extract_data(tar, staging.parent)
    (src,) = [p for p in staging.parent.iterdir() if p.is_dir() and p != staging]
    for patch in _patches():
        _run(["patch", "-p1", "--forward", "--input", str(patch)], src)
    make = ["make", f"ARCH={arch.name}", f"CROSS_COMPILE={arch.cross_compile}", f"-j{jobs}"]
    fragments = config_fragments(arch)
    _run([*make, "tinyconfig"], src)
    _run(["scripts/kconfig/merge_config.sh", "-m", ".config", *map(str, fragments)], src)
    _run([*make, "olddefconfig"], src)
    _check_config(src / ".config", fragments)
    _run([*make, arch.kernel_target], src)
    shutil.copyfile(src / arch.kernel_output, staging / Path(arch.kernel_output).name)
    shutil.copyfile(src / ".config", staging / "config")


def _check_config(config: Path, fragments: list[Path]) -> None:
    """Fail if Kconfig silently dropped an option a fragment asks for."""
    wanted = {}
    for fragment in fragments:
        for line in fragment.read_text().splitlines():
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
