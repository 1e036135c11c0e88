"""Trees in and out of a guest (upload, download) as docker cp copies them, against the baked built-in image."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import anyio
import pytest

from asupermachine import GuestFileError, Machine, Snapshot

pytestmark = pytest.mark.anyio
ASYNCIO_ONLY = pytest.mark.parametrize("anyio_backend", ["asyncio"])
BLOB = os.urandom(1 << 20)
STREAMED_MIB = 4
HUGE_MIB = 200


def _make_tree(root: Path) -> None:
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / "a" / "b" / "c" / "deep").write_bytes(b"deep\n")
    (root / "blob").write_bytes(BLOB)
    (root / "tool").write_bytes(b"#!/bin/sh\necho tool\n")
    (root / "tool").chmod(0o750)
    (root / "secret").write_bytes(b"s")
    (root / "secret").chmod(0o600)
    (root / "a" / "private").mkdir(0o700)
    (root / ("long" * 40)).write_bytes(b"a name past ustar's 100 bytes")
    (root / "to-deep").symlink_to("a/b/c/deep")
    (root / "to-passwd").symlink_to("/etc/passwd")
    os.link(root / "blob", root / "blob-again")


def _listing(root: Path) -> dict[str, tuple[int, str]]:
    """Every entry under ``root``: its mode, and its symlink target or content hash."""
    seen = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        if path.is_symlink():
            what = str(path.readlink())
        else:
            what = "" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
        seen[str(path.relative_to(root))] = (info.st_mode, what)
    return seen


async def test_a_tree_goes_up_and_comes_back_with_its_modes_and_symlinks(baked: Snapshot, tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    _make_tree(source)
    with anyio.fail_after(600):
        async with Machine.restore(baked) as vm:
            await vm.upload(source, "/tmp")  # an existing directory receives it inside
            await vm.upload(source, "/tmp/copy")  # a missing target becomes the copy
            await vm.upload(source / "blob", "/tmp/one-file")
            listed = await vm.exec(
                ["sh", "-c", "cd /tmp/src && stat -c '%a %h %N' tool secret a/private to-deep to-passwd blob"]
            )
            assert listed.stdout.decode().splitlines() == [
                "750 1 tool",
                "600 1 secret",
                "700 2 a/private",
                "777 1 'to-deep' -> 'a/b/c/deep'",
                "777 1 'to-passwd' -> '/etc/passwd'",
                "644 2 blob",  # blob-again is the same inode
            ]
            hashed = await vm.exec(["sh", "-c", "cat /tmp/copy/a/b/c/deep; sha256sum /tmp/one-file"])
            assert hashed.stdout == b"deep\n" + hashlib.sha256(BLOB).hexdigest().encode() + b"  /tmp/one-file\n"

            await vm.download("/tmp/src", tmp_path / "back")  # a missing target becomes the copy
            (tmp_path / "into").mkdir()
            await vm.download("/tmp/copy", tmp_path / "into")  # an existing directory receives it inside
            await vm.download("/tmp/one-file", tmp_path / "one-file")
    assert _listing(tmp_path / "back") == _listing(source)
    assert _listing(tmp_path / "into" / "copy") == _listing(source)
    assert (tmp_path / "one-file").read_bytes() == BLOB


async def test_what_the_guest_cannot_copy_is_a_guest_file_error(baked: Snapshot, tmp_path: Path) -> None:
    with anyio.fail_after(600):
        async with Machine.restore(baked) as vm:
            with pytest.raises(GuestFileError, match="No such file") as missing:
                await vm.download("/no/such/tree", tmp_path / "x")
            assert missing.value.errno == 2 and not (tmp_path / "x").exists()
            (tmp_path / "file").write_bytes(b"x")
            with pytest.raises(GuestFileError, match="No such file"):
                await vm.upload(tmp_path / "file", "/no/such/dir/file")
            with pytest.raises(FileNotFoundError):
                await vm.upload(tmp_path / "absent", "/tmp")
            # More than the guest has room for: the guest's side stops reading and says why.
            (tmp_path / "big").write_bytes(os.urandom(4 << 20))
            await vm.exec(["sh", "-c", "mkdir /tmp/small && mount -t tmpfs -o size=1m tmpfs /tmp/small"])
            with pytest.raises(GuestFileError, match="No space left") as full:
                await vm.upload(tmp_path / "big", "/tmp/small/big")
            assert full.value.errno == errno.ENOSPC
            assert (await vm.exec(["echo", "still served"])).stdout == b"still served\n"


async def test_a_guest_symlink_out_of_the_tree_is_copied_as_a_link_and_never_followed(
    baked: Snapshot, tmp_path: Path
) -> None:
    box = tmp_path / "box"
    box.mkdir()
    before = set(os.listdir(tmp_path.parent))
    with anyio.fail_after(600):
        async with Machine.restore(baked) as vm:
            await vm.exec(["sh", "-c", "mkdir /tmp/evil && cd /tmp/evil && ln -s /etc/passwd x && ln -s ../../.. up"])
            await vm.download("/tmp/evil", box)
            assert (box / "evil" / "x").readlink() == Path("/etc/passwd")
            assert (box / "evil" / "up").readlink() == Path("../../..")
            # The same tree again, now with a directory where the link was: the host's link is
            # replaced, not written through (which would land three levels above the box).
            await vm.exec(["sh", "-c", "cd /tmp/evil && rm up x && mkdir up && echo owned > up/owned && echo y > x"])
            await vm.download("/tmp/evil", box)
    assert (box / "evil" / "up" / "owned").read_bytes() == b"owned\n"
    assert (box / "evil" / "x").read_bytes() == b"y\n" and not (box / "evil" / "x").is_symlink()
    assert set(os.listdir(tmp_path)) == {"box"}
    assert set(os.listdir(tmp_path.parent)) == before  # box/evil/up/owned through ../../.. would land here


async def test_open_streams_a_large_file_in_and_out_without_holding_it(baked: Snapshot) -> None:
    with anyio.fail_after(600):
        async with Machine.restore(baked) as vm:
            async with await vm.open("/tmp/streamed", "wb", permissions=0o600) as writer:
                for _ in range(STREAMED_MIB):
                    await writer.send(BLOB)
            stat = await vm.exec(["stat", "-c", "%a %s", "/tmp/streamed"])
            assert stat.stdout == f"600 {STREAMED_MIB << 20}\n".encode()
            digest = hashlib.sha256()
            async with await vm.open("/tmp/streamed") as reader:
                async for chunk in reader:
                    digest.update(chunk)
            assert digest.digest() == hashlib.sha256(BLOB * STREAMED_MIB).digest()
            with pytest.raises(GuestFileError, match="No such file"):
                await vm.open("/no/such/file")


@ASYNCIO_ONLY
@pytest.mark.guest_heavy  # the guest copies ~2 MiB/s under kvm_pvm: minutes, so the kvm_amd pass only
async def test_a_huge_file_in_a_tree_goes_up_and_comes_back_intact(tmp_path: Path) -> None:
    (tmp_path / "src" / "nested").mkdir(parents=True)
    digest = hashlib.sha256()
    with (tmp_path / "src" / "nested" / "huge").open("wb") as huge:
        for _ in range(HUGE_MIB):
            block = os.urandom(1 << 20)
            digest.update(block)
            huge.write(block)
    # The guest's writable layer is a tmpfs of half its memory: room for the file, in a bigger guest.
    with anyio.fail_after(1800):
        async with Machine.boot(memory_mib=4 * HUGE_MIB) as vm:
            await vm.upload(tmp_path / "src", "/tmp/src")
            summed = await vm.exec(["sha256sum", "/tmp/src/nested/huge"])
            assert summed.stdout.split()[0].decode() == digest.hexdigest()
            await vm.download("/tmp/src", tmp_path / "back")
    back = hashlib.sha256()
    with (tmp_path / "back" / "nested" / "huge").open("rb") as copy:
        while block := copy.read(1 << 20):
            back.update(block)
    assert back.hexdigest() == digest.hexdigest()
