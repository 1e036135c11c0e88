"""Unpacking a source tarball, with tarfile's data filter or, on a Python without it, the same refusals."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from asupermachine._tarfile import extract_data


def _archive(*members: tarfile.TarInfo) -> tarfile.TarFile:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for member in members:
            tar.addfile(member, io.BytesIO(b"x" * member.size) if member.isfile() else None)
    buffer.seek(0)
    return tarfile.open(fileobj=buffer)


def _file(name: str) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.size = 1
    return member


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type, member.linkname = kind, target
    return member


def _device(name: str) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type = tarfile.CHRTYPE
    return member


@pytest.fixture(params=["with the filter", "without it"])
def python(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.param == "without it":  # as on Python before 3.11.4 (Debian 12's is 3.11.2)
        monkeypatch.delattr(tarfile, "data_filter")


@pytest.mark.usefixtures("python")
def test_a_sound_tree_is_unpacked(tmp_path: Path) -> None:
    extract_data(_archive(_file("src/a.c"), _link("src/b.c", "a.c"), _link("src/sub/c.c", "../a.c")), tmp_path)
    assert (tmp_path / "src" / "a.c").read_bytes() == b"x"
    assert (tmp_path / "src" / "sub" / "c.c").read_bytes() == b"x"


@pytest.mark.usefixtures("python")
@pytest.mark.parametrize("member", [
    _file("../outside"), _link("src/up", "../../outside"), _link("src/abs", "/etc/passwd"),
    _link("src/hard", "../outside", tarfile.LNKTYPE), _device("src/null"),
], ids=["dot-dot", "symlink up", "symlink absolute", "hardlink up", "device"])
def test_a_member_out_of_the_destination_is_refused_before_anything_is_written(
    tmp_path: Path, member: tarfile.TarInfo
) -> None:
    destination = tmp_path / "into"
    destination.mkdir()
    with pytest.raises(tarfile.TarError):
        extract_data(_archive(member), destination)
    assert not (tmp_path / "outside").exists()
