"""A disk is attached by many read-only users or one writer; a refused user is told who holds it."""

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from asupermachine import Disk, DiskError
from asupermachine._core.virtio.blk import Block
from asupermachine._core.virtio.blk_lock import HOLDER_XATTR


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "volume.img"
    path.write_bytes(bytes(4096))
    return path


@contextlib.contextmanager
def attached(image: Path, *, read_only: bool, holder: str = "") -> Iterator[Block]:
    device = Block(Disk(image, read_only=read_only), holder)
    try:
        yield device
    finally:
        device.close()


def test_a_second_writer_is_refused_with_the_holders_vm_id(image: Path) -> None:
    with attached(image, read_only=False, holder="1234abcd"):
        with pytest.raises(DiskError, match=r"volume\.img is in use writable by VM 1234abcd"):
            Block(Disk(image, read_only=False), "feedf00d")
        with pytest.raises(DiskError, match="writable by VM 1234abcd"):
            Block(Disk(image, read_only=True), "feedf00d")


def test_read_only_users_share_a_disk_that_no_writer_may_take(image: Path) -> None:
    with attached(image, read_only=True), attached(image, read_only=True):
        with pytest.raises(DiskError, match="in use read-only by other VMs"):
            Block(Disk(image, read_only=False), "feedf00d")


def test_closing_the_writer_frees_the_disk_and_forgets_it(image: Path) -> None:
    with attached(image, read_only=False, holder="1234abcd"):
        assert os.getxattr(image, HOLDER_XATTR) == b"1234abcd"
    assert HOLDER_XATTR not in os.listxattr(image)
    with attached(image, read_only=False, holder="feedf00d"):
        pass


def test_a_refused_attach_keeps_no_descriptor(image: Path) -> None:
    before = len(os.listdir("/proc/self/fd"))
    with attached(image, read_only=False):
        for _ in range(3):
            with pytest.raises(DiskError):
                Block(Disk(image, read_only=True))
        assert len(os.listdir("/proc/self/fd")) == before + 1


def test_without_user_xattrs_the_holder_is_still_named(image: Path) -> None:
    with attached(image, read_only=False, holder="1234abcd"):
        os.removexattr(image, HOLDER_XATTR)  # as on a filesystem without them (tmpfs)
        with pytest.raises(DiskError, match="writable by VM 1234abcd"):
            Block(Disk(image, read_only=True), "feedf00d")
    with attached(image, read_only=False, holder="feedf00d"):
        os.removexattr(image, HOLDER_XATTR)
        with pytest.raises(DiskError, match="writable by VM feedf00d"):
            Block(Disk(image, read_only=False))
