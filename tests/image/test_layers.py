"""Layer apply on real tar streams: whiteouts, opaque dirs, file kinds, and a corpus of hostile layers."""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from asupermachine._errors import LayerError
from asupermachine._tree.rooted import entry_path, symlink_stays_inside
from asupermachine.image.layers import LayerApplier, Limits

Build = Callable[[tarfile.TarFile], None]


def tar_bytes(build: Build) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        build(tar)
    return buffer.getvalue()


def add_file(tar: tarfile.TarFile, name: str, data: bytes = b"", mode: int = 0o644, **fields: object) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    for key, value in fields.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data))


def add_entry(
    tar: tarfile.TarFile, name: str, kind: bytes, linkname: str = "", mode: int = 0o755, **fields: object
) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, mode
    for key, value in fields.items():
        setattr(info, key, value)
    tar.addfile(info)


def apply(root: Path, *layers: bytes, limits: Limits = Limits()) -> None:
    with LayerApplier(root, limits) as applier:
        for index, layer in enumerate(layers):
            applier.apply(io.BytesIO(layer), f"#{index}")


def tree(root: Path) -> dict[str, str]:
    """Every path under root with what it is: file content, link target or 'dir'."""
    found = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_symlink():
            found[relative] = "-> " + os.readlink(path)
        elif path.is_dir():
            found[relative] = "dir"
        else:
            found[relative] = path.read_bytes().decode()
    return found


def test_layers_stack_with_whiteouts_and_opaque_directories(tmp_path: Path) -> None:
    def base(tar: tarfile.TarFile) -> None:
        add_entry(tar, "etc", tarfile.DIRTYPE)
        add_file(tar, "etc/keep", b"keep")
        add_file(tar, "etc/gone", b"gone")
        add_entry(tar, "opaque", tarfile.DIRTYPE)
        add_file(tar, "opaque/old", b"old")
        add_entry(tar, "opaque/sub", tarfile.DIRTYPE)
        add_file(tar, "opaque/sub/deep", b"deep")

    def top(tar: tarfile.TarFile) -> None:
        add_entry(tar, "opaque", tarfile.DIRTYPE)
        add_file(tar, "opaque/new", b"new")  # listed before the marker: kept
        add_file(tar, "opaque/.wh..wh..opq")
        add_file(tar, "etc/.wh.gone")
        add_file(tar, "./etc/added", b"added")

    apply(tmp_path, tar_bytes(base), gzip.compress(tar_bytes(top)))
    assert tree(tmp_path) == {
        "etc": "dir", "etc/added": "added", "etc/keep": "keep", "opaque": "dir", "opaque/new": "new",
    }


def test_file_kinds_ownership_modes_and_xattrs_are_kept(tmp_path: Path) -> None:
    def layer(tar: tarfile.TarFile) -> None:
        add_entry(tar, "bin", tarfile.DIRTYPE)
        add_file(tar, "bin/tool", b"#!", mode=0o4755, uid=1000, gid=1001,
                 pax_headers={"SCHILY.xattr.user.origin": "layer"})
        add_entry(tar, "bin/hard", tarfile.LNKTYPE, linkname="bin/tool")
        add_entry(tar, "bin/abs", tarfile.SYMTYPE, linkname="/bin/tool")
        add_entry(tar, "bin/rel", tarfile.SYMTYPE, linkname="../bin/tool")
        add_entry(tar, "tmp", tarfile.DIRTYPE, mode=0o1777)
        add_entry(tar, "dev/null", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3)
        add_entry(tar, "run/fifo", tarfile.FIFOTYPE, mode=0o600)

    apply(tmp_path, zstandard.ZstdCompressor().compress(tar_bytes(layer)))
    tool = (tmp_path / "bin/tool").stat()
    assert (stat.S_IMODE(tool.st_mode), tool.st_uid, tool.st_gid) == (0o4755, 1000, 1001)
    assert os.getxattr(tmp_path / "bin/tool", "user.origin") == b"layer"
    assert (tmp_path / "bin/hard").stat().st_ino == tool.st_ino
    assert os.readlink(tmp_path / "bin/abs") == "/bin/tool"
    assert stat.S_IMODE((tmp_path / "tmp").stat().st_mode) == 0o1777
    null = (tmp_path / "dev/null").stat()
    assert stat.S_ISCHR(null.st_mode) and os.major(null.st_rdev) == 1 and os.minor(null.st_rdev) == 3
    assert stat.S_ISFIFO((tmp_path / "run/fifo").stat().st_mode)


def _escape_through_symlink(tar: tarfile.TarFile) -> None:
    add_entry(tar, "evil", tarfile.SYMTYPE, linkname="/")
    add_file(tar, "evil/canary", b"overwritten")


HOSTILE: dict[str, Build] = {
    "dot-dot path": lambda tar: add_file(tar, "../canary", b"overwritten"),
    "nested dot-dot": lambda tar: add_file(tar, "a/../../canary", b"overwritten"),
    "absolute path": lambda tar: add_file(tar, "/canary", b"overwritten"),
    "symlink then write through it": _escape_through_symlink,
    "relative symlink out": lambda tar: add_entry(tar, "out", tarfile.SYMTYPE, linkname="../../canary"),
    "hardlink to outside": lambda tar: add_entry(tar, "link", tarfile.LNKTYPE, linkname="../canary"),
    "whiteout of dot-dot": lambda tar: add_file(tar, "dir/.wh..."),
    "whiteout through dot-dot": lambda tar: add_file(tar, "../.wh.canary"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_layers_are_refused_and_touch_nothing_outside(tmp_path: Path, name: str) -> None:
    canary = tmp_path / "canary"
    canary.write_bytes(b"untouched")
    root = tmp_path / "store" / "tree"
    root.mkdir(parents=True)
    with pytest.raises(LayerError, match="layer #0, entry"):
        apply(root, tar_bytes(HOSTILE[name]))
    assert canary.read_bytes() == b"untouched"
    assert not (tmp_path / "evil").exists() and not (tmp_path / "link").exists()


def test_a_gzip_bomb_stops_at_the_limit(tmp_path: Path) -> None:
    bomb = gzip.compress(tar_bytes(lambda tar: add_file(tar, "zeros", bytes(8 << 20))))
    assert len(bomb) < 64 << 10
    with pytest.raises(LayerError, match="decompression bomb"):
        apply(tmp_path, bomb, limits=Limits(max_bytes=1 << 20))


def test_too_many_entries_stop_at_the_limit(tmp_path: Path) -> None:
    many = tar_bytes(lambda tar: [add_file(tar, f"f{i}") for i in range(20)])
    with pytest.raises(LayerError, match="more than 10 entries"):
        apply(tmp_path, many, limits=Limits(max_entries=10))


@pytest.mark.parametrize("garbage", [b"not a tar at all" * 100, gzip.compress(b"x")[:-4], b"\x28\xb5\x2f\xfdjunk"])
def test_malformed_layers_are_refused(tmp_path: Path, garbage: bytes) -> None:
    with pytest.raises(LayerError, match="layer #0"):
        apply(tmp_path, garbage)


def test_entry_paths_and_symlink_targets() -> None:
    assert entry_path("./a//b/") == ("a", "b")
    for bad in ("/a", "a/../b", ".."):
        with pytest.raises(ValueError):
            entry_path(bad)
    assert symlink_stays_inside(("a", "b", "link"), "../../x")
    assert not symlink_stays_inside(("a", "link"), "../../x")
    assert symlink_stays_inside(("link",), "/anything/../../..")


def two_file_layer() -> tuple[bytes, int, int]:
    """A ustar layer of ``a`` (700 bytes) then ``b`` (100 bytes); offsets of b's header and of b's data end."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        add_file(tar, "a", b"A" * 700)
        add_file(tar, "b", b"B" * 100)
    b_header = 512 + 1024  # a's header, a's data padded to two blocks
    return buffer.getvalue(), b_header, b_header + 512 + 100


@pytest.mark.parametrize(
    "cut",
    ["after last data", "after padding", "after one end block", "whole"],
)
def test_a_layer_ending_at_an_entry_boundary_or_after_its_last_data_is_accepted_as_go_does(
    tmp_path: Path, cut: str
) -> None:
    layer, _, data_end = two_file_layer()
    ends = {"after last data": data_end, "after padding": data_end + 412, "after one end block": data_end + 924}
    apply(tmp_path, layer[: ends.get(cut, len(layer))])
    assert tree(tmp_path) == {"a": "A" * 700, "b": "B" * 100}


@pytest.mark.parametrize(
    ("cut", "message"),
    [("mid header", "inside an entry's header"), ("mid data", "ends inside this entry's data")],
)
def test_a_layer_cut_inside_a_header_or_data_is_refused_saying_where(tmp_path: Path, cut: str, message: str) -> None:
    layer, b_header, data_end = two_file_layer()
    end = b_header + 100 if cut == "mid header" else data_end - 50
    with pytest.raises(LayerError, match=message):
        apply(tmp_path, layer[:end])


def test_a_layer_cut_inside_data_it_does_not_extract_is_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        add_file(tar, "dir/.wh.gone", b"x" * 2000)  # a whiteout's data is skipped, not read
    with pytest.raises(LayerError, match="inside the data of 'dir/.wh.gone'"):
        apply(tmp_path, buffer.getvalue()[:1200])


def test_a_damaged_header_after_the_first_is_refused_not_taken_as_the_end(tmp_path: Path) -> None:
    layer, b_header, _ = two_file_layer()
    damaged = bytearray(layer)
    damaged[b_header + 148 : b_header + 156] = b"garbage!"  # b's header checksum
    with pytest.raises(LayerError, match="damaged tar header at byte 1536"):
        apply(tmp_path, bytes(damaged))
