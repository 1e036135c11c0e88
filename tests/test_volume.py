"""Volumes: made sparse and clean by mkfs.ext4, and mapped to guest devices and init's mounts."""

import subprocess
from pathlib import Path

import pytest

from asupermachine import Volume
from asupermachine._core.recipe import GuestMount
from asupermachine._volume import attachments


def fsck_clean(path: Path) -> bool:
    return subprocess.run(["e2fsck", "-n", "-f", str(path)], capture_output=True).returncode == 0


@pytest.mark.anyio
async def test_create_makes_a_sparse_clean_ext4_file(tmp_path: Path) -> None:
    volume = await Volume.create(tmp_path / "data.ext4", size_mib=64)
    assert volume == Volume(tmp_path / "data.ext4")
    assert volume.path.stat().st_size == 64 << 20
    assert volume.path.stat().st_blocks * 512 < 8 << 20  # the journal, a few tables: not 64 MiB
    assert fsck_clean(volume.path)


@pytest.mark.anyio
async def test_create_refuses_an_existing_file_a_tiny_size_and_another_filesystem(tmp_path: Path) -> None:
    existing = tmp_path / "there"
    existing.write_bytes(b"keep me")
    with pytest.raises(FileExistsError):
        await Volume.create(existing, size_mib=64)
    assert existing.read_bytes() == b"keep me"
    with pytest.raises(ValueError, match="at least 8 MiB"):
        await Volume.create(tmp_path / "tiny", size_mib=1)
    with pytest.raises(ValueError, match="'xfs' is not supported"):
        await Volume.create(tmp_path / "other", size_mib=64, fs="xfs")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["there"]


def test_volumes_follow_the_other_disks_and_are_mounted_where_asked() -> None:
    data, shared = Volume("/v/data.ext4"), Volume("/v/shared.ext4", read_only=True)
    disks, mounts = attachments({"/data/": data, "/srv/shared": shared}, first_index=2)
    assert disks == (data.disk, shared.disk)
    assert not disks[0].read_only and disks[1].read_only
    assert mounts == (GuestMount("/dev/vdc", "/data"), GuestMount("/dev/vdd", "/srv/shared", read_only=True))


@pytest.mark.parametrize("targets", [["data"], ["/"], ["/a/.."], ["/data", "/data/"]])
def test_a_mount_point_must_be_absolute_below_root_and_unique(targets: list[str]) -> None:
    with pytest.raises(ValueError, match="mount point"):
        attachments({target: Volume(f"/v/{i}") for i, target in enumerate(targets)}, first_index=1)


def mark_needing_recovery(path: Path) -> None:
    """Set the superblock's "needs recovery" bit, as a guest stopped with the volume mounted leaves it."""
    subprocess.run(["debugfs", "-w", "-R", "feature needs_recovery", str(path)], check=True, capture_output=True)


@pytest.mark.anyio
async def test_settling_a_read_only_volume_replays_its_journal_a_writable_one_is_left_to_its_guest(
    tmp_path: Path,
) -> None:
    volume = await Volume.create(tmp_path / "data.ext4", size_mib=16)
    mark_needing_recovery(volume.path)
    await volume.settle()
    assert volume._needs_recovery()
    await Volume(volume.path, read_only=True).settle()
    assert not volume._needs_recovery() and fsck_clean(volume.path)
