"""The root an L1 switches into, a directory of this host's shared over 9p, and how stage 1 lays it out."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class L1Root:
    path: Path
    """The directory of this host's the L1 takes for its root (``/`` for this host's own), read-only under a
    tmpfs overlay; with :attr:`finish`, a writable directory for what the L1 hands back (at ``/nested-root``)."""
    repository: Path | None = None
    """A directory of this host's shown at the same path in the L1, read-only under a tmpfs overlay: the
    repository, when the root is not this host's own."""
    finish: Path | None = None
    """A cpio of a root debootstrap's first stage made, its files under ``finish/``: appended to the initramfs,
    copied into a tmpfs and finished there (stage 1 runs the second stage). Not over 9p, whose every small
    operation costs so much under QEMU's TCG that dpkg took a minute a package."""

    def stage1_config(self) -> str:
        """Shell assignments for stage1.sh (``ROOT_MODE``: ``finish`` or ``overlay``; ``REPOSITORY``: a path or
        empty)."""
        mode = "overlay" if self.finish is None else "finish"
        return f"ROOT_MODE={mode}\nREPOSITORY={shlex.quote(str(self.repository or ''))}\n"


HOST_ROOT = L1Root(Path("/"))
"""This host's own root, for an L1 of its architecture: it holds the repository and its virtualenv."""
