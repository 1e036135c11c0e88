"""Debian's own kernel for the L1: its image and modules, fetched with apt and cached by package version."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .arch import L1Arch
from .cache import cache_dir, exclusive
from .debian import DebianPackageError, apt_cache, package_version, unpack


class KernelFetchError(DebianPackageError):
    """Debian's kernel package could not be found or unpacked."""


@dataclass(frozen=True)
class L1Kernel:
    version: str
    """The kernel's release, as ``uname -r`` prints it (``6.1.0-57-amd64``)."""
    root: Path
    """Where the package is unpacked: ``boot/`` and ``lib/modules/<version>/``."""
    image: Path

    @property
    def modules(self) -> Path:
        return self.root / "lib" / "modules" / self.version


def fetch_kernel(arch: L1Arch) -> L1Kernel:
    """The newest kernel Debian's archive offers for ``arch``, downloaded and unpacked once."""
    package, version = _candidate(arch.kernel_package)
    name = package.partition(":")[0]  # without a foreign architecture's suffix
    release = name.removeprefix("linux-image-")
    root = cache_dir() / arch.name / f"{name}_{version}"
    with exclusive(root.with_suffix(".lock")):
        if not root.is_dir():
            unpack(package, root)
            _remove_others(root)  # each older kernel is ~400 MB unpacked
    image = root / arch.kernel_image.format(version=release)
    if not image.is_file():
        raise KernelFetchError(f"{package} {version} holds no {image.relative_to(root)}")
    return L1Kernel(release, root, image)


def _candidate(meta_package: str) -> tuple[str, str]:
    """The kernel package ``meta_package`` depends on now, and its version."""
    for attempt in range(2):
        found = re.search(r"Depends: (linux-image-\S+)", apt_cache("depends", meta_package))
        if found:
            package = found.group(1)
            version = package_version(package)
            if version:
                return package, version
        if attempt == 0:
            foreign = meta_package.partition(":")[2]
            if foreign:  # another architecture's packages: listed once dpkg takes that architecture
                subprocess.run(["dpkg", "--add-architecture", foreign], check=False)
            subprocess.run(["apt-get", "update", "-qq"], check=False)  # a fresh machine has no package lists
    raise KernelFetchError(f"Debian's archive offers no {meta_package} here (apt-cache depends {meta_package})")


def _remove_others(keep: Path) -> None:
    for entry in keep.parent.glob("linux-image-*"):
        if entry.is_dir() and entry != keep:
            shutil.rmtree(entry, ignore_errors=True)
