"""Debian's own kernel for the L1: its image and modules, fetched with apt and cached by package version."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .arch import L1Arch
from .cache import cache_dir, exclusive


class KernelFetchError(RuntimeError):
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
            _unpack(package, root)
            _remove_others(root)  # each older kernel is ~400 MB unpacked
    image = root / arch.kernel_image.format(version=release)
    if not image.is_file():
        raise KernelFetchError(f"{package} {version} holds no {image.relative_to(root)}")
    return L1Kernel(release, root, image)


def _candidate(meta_package: str) -> tuple[str, str]:
    """The kernel package ``meta_package`` depends on now, and its version."""
    for attempt in range(2):
        depends = _apt_cache("depends", meta_package)
        found = re.search(r"Depends: (linux-image-\S+)", depends)
        if found:
            package = found.group(1)
            show = _apt_cache("show", "--no-all-versions", package)
            version = re.search(r"^Version: (\S+)", show, re.MULTILINE)
            if version:
                return package, version.group(1)
        if attempt == 0:
            foreign = meta_package.partition(":")[2]
            if foreign:  # another architecture's packages: listed once dpkg takes that architecture
                subprocess.run(["dpkg", "--add-architecture", foreign], check=False)
            subprocess.run(["apt-get", "update", "-qq"], check=False)  # a fresh machine has no package lists
    raise KernelFetchError(f"Debian's archive offers no {meta_package} here (apt-cache depends {meta_package})")


def _apt_cache(*args: str) -> str:
    return subprocess.run(["apt-cache", *args], capture_output=True, text=True, check=False).stdout


def _unpack(package: str, root: Path) -> None:
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root.parent) as scratch:
        fetched = subprocess.run(
            ["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", package],
            cwd=scratch, capture_output=True, text=True, check=False,
        )
        debs = list(Path(scratch).glob("*.deb"))
        if fetched.returncode != 0 or not debs:
            raise KernelFetchError(f"apt-get download {package} failed: {fetched.stderr.strip()[-500:]}")
        staging = Path(scratch) / "tree"
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(staging)], check=True)
        os.rename(staging, root)


def _remove_others(keep: Path) -> None:
    for entry in keep.parent.glob("linux-image-*"):
        if entry.is_dir() and entry != keep:
            shutil.rmtree(entry, ignore_errors=True)
