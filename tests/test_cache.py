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
    _cache._sha256_of_version.cache_clear()


def test_a_digest_is_remembered_for_the_next_process(tmp_path: Path) -> None:
    file = tmp_path / "f"
    file.write_bytes(b"one")
    assert _cache.file_sha256(file) == hashlib.sha256(b"one").hexdigest()
    _cache._sha256_of_version.cache_clear()  # as a new process starts
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
    _cache._sha256_of_version.cache_clear()
    assert _cache.file_sha256(file) == hashlib.sha256(b"two").hexdigest()


def test_a_damaged_memo_is_ignored(tmp_path: Path) -> None:
    file = tmp_path / "f"
    file.write_bytes(b"one")
    _cache.file_sha256(file)
    (memo,) = (tmp_path / "cache" / "asupermachine" / "digests").iterdir()
    memo.write_text("not a digest")
    _cache._sha256_of_version.cache_clear()
    assert _cache.file_sha256(file) == hashlib.sha256(b"one").hexdigest()
