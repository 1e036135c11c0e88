"""Compare two unpacked root trees entry by entry, as a differential test against a reference unpacker."""

from __future__ import annotations

import hashlib
import os
import stat
from collections import defaultdict
from pathlib import Path


def describe(root: Path) -> dict[str, tuple[object, ...]]:
    """Every path under ``root`` (and root itself, as ".") with what it is, without following symlinks."""
    entries: dict[str, tuple[object, ...]] = {}
    for directory, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames] if directory == str(root) else [*dirnames, *filenames]:
            path = Path(directory) / name if name != "." else root
            entries[path.relative_to(root).as_posix()] = _entry(path)
    return entries


def _entry(path: Path) -> tuple[object, ...]:
    info = path.lstat()
    kind = stat.S_IFMT(info.st_mode)
    if stat.S_ISREG(kind):
        detail: object = hashlib.sha256(path.read_bytes()).hexdigest()
    elif stat.S_ISLNK(kind):
        detail = os.readlink(path)
    elif stat.S_ISCHR(kind) or stat.S_ISBLK(kind):
        detail = (os.major(info.st_rdev), os.minor(info.st_rdev))
    else:
        detail = None
    xattrs = tuple(sorted(
        (name, os.getxattr(path, name, follow_symlinks=False))
        for name in os.listxattr(path, follow_symlinks=False)
    ))
    return (stat.filemode(info.st_mode), info.st_uid, info.st_gid, detail, xattrs)


def hardlink_groups(root: Path) -> set[frozenset[str]]:
    """The sets of paths under ``root`` that are one file (regular files with more than one link)."""
    groups: dict[tuple[int, int], set[str]] = defaultdict(set)
    for directory, _, filenames in os.walk(root):
        for name in filenames:
            path = Path(directory) / name
            info = path.lstat()
            if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
                groups[(info.st_dev, info.st_ino)].add(path.relative_to(root).as_posix())
    return {frozenset(group) for group in groups.values() if len(group) > 1}


def differences(ours: Path, reference: Path) -> list[str]:
    """What differs between the two trees, one line per path (empty when they are the same)."""
    mine, theirs = describe(ours), describe(reference)
    lines = [f"{path}: only in ours" for path in sorted(mine.keys() - theirs.keys())]
    lines += [f"{path}: only in the reference" for path in sorted(theirs.keys() - mine.keys())]
    lines += [
        f"{path}: ours {mine[path]} vs reference {theirs[path]}"
        for path in sorted(mine.keys() & theirs.keys())
        if mine[path] != theirs[path]
    ]
    if (links := hardlink_groups(ours)) != (reference_links := hardlink_groups(reference)):
        lines.append(
            f"hardlinks: ours {sorted(map(sorted, links))} vs reference {sorted(map(sorted, reference_links))}"
        )
    return lines
