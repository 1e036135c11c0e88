"""The build context: the directory COPY and ADD read, less what its ``.dockerignore`` leaves out.

A source is a path or a wildcard pattern relative to the context's root;
``..`` cannot climb above it, and a symlink is followed inside it, so nothing
outside the context is ever read.
"""

from __future__ import annotations

from pathlib import Path

from .._errors import BuildError
from .copy_layer import Source
from .patterns import IgnoreRules, has_wildcards, match_names
from .scoped import resolve_in, scoped_parts

IGNORE_FILE = ".dockerignore"


def matching_paths(root: Path, pattern: str) -> list[Path]:
    """The paths under ``root`` that ``pattern`` names (each of its components may hold wildcards), resolved."""
    found = [root]
    for part in scoped_parts(pattern):
        following: list[Path] = []
        for directory in found:
            directory = resolve_in(root, str(directory.relative_to(root)))
            if has_wildcards(part):
                names = [entry.name for entry in directory.iterdir()] if directory.is_dir() else []
                following += [directory / name for name in match_names(part, names)]
            elif (directory / part).exists() or (directory / part).is_symlink():
                following.append(directory / part)
        found = following
    return [resolve_in(root, str(path.relative_to(root))) for path in found]


class BuildContext:
    """The context directory ``root`` and its ``.dockerignore``."""

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise BuildError(f"the build context {root} is not a directory")
        self.root = root.resolve()
        ignore = self.root / IGNORE_FILE
        self.rules = IgnoreRules.parse(ignore.read_text()) if ignore.is_file() else IgnoreRules()

    def ignored(self, path: Path) -> bool:
        relative = path.relative_to(self.root).as_posix()
        return relative != "." and self.rules.ignores(relative)

    def sources(self, pattern: str) -> list[Source]:
        """What ``pattern`` names in the context, less what ``.dockerignore`` leaves out; none is an error."""
        if pattern.startswith(("http://", "https://", "git@")):
            raise BuildError(f"{pattern}: only files in the build context can be copied, not URLs")
        if _climbs_out(pattern):
            raise BuildError(f"{pattern}: outside the build context")
        paths = [path for path in matching_paths(self.root, pattern) if not self.ignored(path)]
        if not paths:
            raise BuildError(f"{pattern}: not found in the build context (or left out by {IGNORE_FILE})")
        return [Source(self.root, path, keeps_owner=False, ignored=self.ignored) for path in paths]


def _climbs_out(path: str) -> bool:
    """Whether ``..`` in ``path`` goes above where it starts."""
    depth = 0
    for part in path.split("/"):
        depth += -1 if part == ".." else 0 if part in ("", ".") else 1
        if depth < 0:
            return True
    return False
