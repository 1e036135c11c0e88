"""The differential tests' tree comparison notices each kind of difference, naming the path."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from .tree_diff import differences


def make_tree(root: Path) -> Path:
    (root / "dir").mkdir(parents=True)
    (root / "dir" / "file").write_bytes(b"content")
    os.link(root / "dir" / "file", root / "dir" / "hard")
    (root / "link").symlink_to("dir/file")
    os.setxattr(root / "dir" / "file", "user.note", b"one")
    return root


CHANGES: dict[str, Callable[[Path], None]] = {
    "dir/file": lambda root: (root / "dir" / "file").chmod(0o4755),
    "dir": lambda root: os.chown(root / "dir", 1, 1),
    "link": lambda root: ((root / "link").unlink(), (root / "link").symlink_to("dir/hard")),
    "hard": lambda root: (
        (root / "dir" / "hard").unlink(),
        shutil.copyfile(root / "dir" / "file", root / "dir" / "hard"),
    ),
    "note": lambda root: os.setxattr(root / "dir" / "file", "user.note", b"two"),
    "extra": lambda root: (root / "extra").mkdir(),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_each_kind_of_difference_is_reported_with_its_path(tmp_path: Path, change: str) -> None:
    ours, theirs = make_tree(tmp_path / "ours"), make_tree(tmp_path / "theirs")
    assert differences(ours, theirs) == []
    CHANGES[change](theirs)
    found = differences(ours, theirs)
    assert found and any(change.split("/")[0] in line for line in found), found
