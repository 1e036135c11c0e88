"""The host side of a download, fed crafted tar streams as a hostile guest would send them."""

from __future__ import annotations

import io
import stat
import tarfile
from pathlib import Path

import pytest

from asupermachine import UnsafeGuestTree
from asupermachine._tree.extract import TreeExtractor, download_target


def _tar(*members: tuple[tarfile.TarInfo, bytes]) -> io.BytesIO:
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member, data in members:
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    stream.seek(0)
    return stream


def _entry(name: str, kind: bytes = tarfile.REGTYPE, *, link: str = "", mode: int = 0o644) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type, member.linkname, member.mode, member.mtime = kind, link, mode, 1_700_000_000
    return member


def _extract(tmp_path: Path, *members: tuple[tarfile.TarInfo, bytes]) -> Path:
    (tmp_path / "box").mkdir()
    TreeExtractor(tmp_path / "box", "copy", "/guest/tree").extract(_tar(*members))
    return tmp_path / "box" / "copy"


def _everything(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*")}


def test_a_tree_lands_as_the_target_with_modes_symlinks_and_hardlinks(tmp_path: Path) -> None:
    copy = _extract(
        tmp_path,
        (_entry(".", tarfile.DIRTYPE, mode=0o750), b""),
        (_entry("./bin", tarfile.DIRTYPE, mode=0o555), b""),
        (_entry("./bin/tool", mode=0o4755), b"#!/bin/sh\n"),
        (_entry("./bin/again", tarfile.LNKTYPE, link="./bin/tool"), b""),
        (_entry("./passwd", tarfile.SYMTYPE, link="/etc/passwd"), b""),
        (_entry("./up", tarfile.SYMTYPE, link="../../.."), b""),
        (_entry("./" + "n" * 150), b"long"),
    )
    assert stat.S_IMODE(copy.stat().st_mode) == 0o750
    assert stat.S_IMODE((copy / "bin").stat().st_mode) == 0o555
    assert stat.S_IMODE((copy / "bin/tool").stat().st_mode) == 0o755  # never setuid from the guest
    assert (copy / "bin/tool").stat().st_mtime == 1_700_000_000
    assert (copy / "bin/again").stat().st_ino == (copy / "bin/tool").stat().st_ino
    # Symlinks are kept as they are, never followed.
    assert (copy / "passwd").readlink() == Path("/etc/passwd")
    assert (copy / "up").readlink() == Path("../../..")
    assert (copy / ("n" * 150)).read_bytes() == b"long"
    (copy / "bin").chmod(0o755)  # let pytest clean up


def test_one_file_lands_as_the_target(tmp_path: Path) -> None:
    copy = _extract(tmp_path, (_entry(".", mode=0o600), b"content"))
    assert copy.read_bytes() == b"content" and stat.S_IMODE(copy.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("members", "why"),
    [
        ([(_entry("/etc/evil"), b"x")], "absolute path"),
        ([(_entry("./../evil"), b"x")], "'..' component"),
        ([(_entry("./a/../../evil"), b"x")], "'..' component"),
        ([(_entry("./up", tarfile.SYMTYPE, link=".."), b""), (_entry("./up/evil"), b"x")], "through a symlink"),
        (
            [(_entry("./up", tarfile.SYMTYPE, link="../.."), b""), (_entry("./up/d/evil", tarfile.DIRTYPE), b"")],
            "through a symlink",
        ),
        ([(_entry("./out", tarfile.LNKTYPE, link="../outside"), b"")], "'..' component"),
        ([(_entry("./out", tarfile.LNKTYPE, link="/etc/passwd"), b"")], "absolute path"),
        ([(_entry("./out", tarfile.LNKTYPE, link="./missing"), b"")], "does not hold"),
        ([(_entry("./null", tarfile.CHRTYPE), b"")], "device node"),
        ([(_entry("./disk", tarfile.BLKTYPE), b"")], "device node"),
        ([(_entry("./pipe", tarfile.FIFOTYPE), b"")], "fifo"),
    ],
)
def test_a_hostile_entry_is_refused_and_nothing_lands_outside(
    tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes]], why: str
) -> None:
    (tmp_path / "outside").write_bytes(b"mine")
    with pytest.raises(UnsafeGuestTree, match=why):
        _extract(tmp_path, (_entry(".", tarfile.DIRTYPE), b""), *members)
    assert _everything(tmp_path) - {"box", "outside"} <= {f"box/copy{rest}" for rest in ("", "/up", "/a")}
    assert (tmp_path / "outside").read_bytes() == b"mine"


def test_a_cut_stream_is_not_taken_for_a_whole_tree(tmp_path: Path) -> None:
    whole = _tar((_entry("."), b"x" * 4096)).getvalue()
    (tmp_path / "box").mkdir()
    with pytest.raises(tarfile.ReadError, match="unexpected end"):
        TreeExtractor(tmp_path / "box", "copy", "/f").extract(io.BytesIO(whole[:2048]))


def test_the_target_follows_docker_cp(tmp_path: Path) -> None:
    assert download_target(tmp_path, "/etc/hosts") == (tmp_path, "hosts")
    assert download_target(tmp_path, "/var/log/") == (tmp_path, "log")
    assert download_target(tmp_path / "new", "/etc/hosts") == (tmp_path, "new")
    with pytest.raises(ValueError, match="no name"):
        download_target(tmp_path, "/")
