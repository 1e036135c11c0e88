"""Debian's packages, of this host's architecture or another dpkg takes: their versions, unpacked by dpkg-deb."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path


class DebianPackageError(RuntimeError):
    """A Debian package could not be found or unpacked."""


def apt_cache(*args: str) -> str:
    return subprocess.run(["apt-cache", *args], capture_output=True, text=True, check=False).stdout


def package_version(package: str) -> str | None:
    """The version of ``package`` (``name`` or ``name:arch``) apt would fetch, or None if none is offered."""
    version = re.search(r"^Version: (\S+)", apt_cache("show", "--no-all-versions", package), re.MULTILINE)
    return version.group(1) if version else None


def unpack(package: str, root: Path) -> None:
    """Download ``package`` and unpack its files (``dpkg-deb -x``) into ``root``, which appears whole or not at all."""
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root.parent) as scratch:
        fetched = subprocess.run(
            ["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", package],
            cwd=scratch, capture_output=True, text=True, check=False,
        )
        debs = list(Path(scratch).glob("*.deb"))
        if fetched.returncode != 0 or not debs:
            raise DebianPackageError(f"apt-get download {package} failed: {fetched.stderr.strip()[-500:]}")
        staging = Path(scratch) / "tree"
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(staging)], check=True)
        os.rename(staging, root)
