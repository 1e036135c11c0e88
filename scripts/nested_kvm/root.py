"""The root an L1 switches into, a directory of this host's shared over 9p, and how stage 1 lays it out."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class L1Root:
    path: Path
    """The directory of this host's the L1 takes for its root (``/`` for this host's own), read-only under a
    tmpfs overlay."""
    repository: Path | None = None
    """A directory of this host's shown at the same path in the L1, read-only under a tmpfs overlay: the
    repository, when the root is not this host's own."""

    def stage1_config(self) -> str:
        """Shell assignments for stage1.sh (``REPOSITORY``: a path or empty)."""
        return f"REPOSITORY={shlex.quote(str(self.repository or ''))}\n"


HOST_ROOT = L1Root(Path("/"))
"""This host's own root, for an L1 of its architecture: it holds the repository and its virtualenv."""
