"""File digests are remembered across processes by file version, and a changed file is hashed again."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from asupermachine import _cache


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    _cache._remembered.cache_clear()


def test_a_digest_is_remembered_for_the_next_process(tmp_path: Path) -> None:
    file = tmp_path / "f"
    file.write_bytes(b"one")
    assert _cache.file_sha256(file) == hashlib.sha256(b"one").hexdigest()
    _cache._remembered.cache_clear()  # as a new process starts
    (memo,) = (tmp_path / "cache" / "asupermachine" / "digests").iterdir()
    assert memo.read_text() == hashlib.sha256(b"one").hexdigest()


def test_a_file_rewritten_with_its_old_size_and_mtime_is_hashed_again(tmp_path: Path) -> None:
    file = tmp_path / "f"
    file.write_bytes(b"one")
    before = file.stat()
    assert _cache.file_sha256(file) == hashlib.sha256(b"one").hexdigest()
    time.sleep(0.05)  # past the coarse clock's tick that stamps ctimes
    file.write_bytes(b"two")
    os.utime(file, ns=(before.st_atime_ns, before.st_mtime_ns))  # the ctime still moves on
    _cache._remembered.cache_clear()
    assert _cache.file_sha256(file) == hashlib.sha256(b"two").hexdigest()


def test_a_damaged_memo_is_ignored(tmp_path: Path) -> None:
    file = tmp_path / "f"
    file.write_bytes(b"one")
    _cache.file_sha256(file)
    (memo,) = (tmp_path / "cache" / "asupermachine" / "digests").iterdir()
    memo.write_text("not a digest")
    _cache._remembered.cache_clear()
    assert _cache.file_sha256(file) == hashlib.sha256(b"one").hexdigest()


def test_an_answer_is_worked_out_once_per_version_and_a_failure_is_not_remembered(tmp_path: Path) -> None:
    file = tmp_path / "f"
    file.write_bytes(b"one")
    asked: list[Path] = []

    def answer(path: Path) -> str:
        asked.append(path)
        if path.read_bytes() == b"bad":
            raise ValueError("refused")
        return "good"

    def ask() -> str:
        return _cache.remembered(file, "is it good", answer, "good".__eq__)

    assert ask() == ask() == "good"
    _cache._remembered.cache_clear()  # as a new process starts
    assert ask() == "good" and len(asked) == 1
    time.sleep(0.05)
    file.write_bytes(b"bad")
    for _ in range(2):
        with pytest.raises(ValueError):
            ask()
    assert len(asked) == 3
