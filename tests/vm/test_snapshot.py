"""Snapshots on /dev/kvm: a live snapshot, restores that carry on, clones that share nothing they write."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import anyio
import pytest

from asupermachine import Image, Machine, Snapshot, SnapshotError, Volume, WarmupFailed
from asupermachine._cache import file_sha256
from tests.support.exec_output import shell, stdout_of
from tests.support.resources import assert_nothing_left, held

pytestmark = pytest.mark.anyio
CLONES = 8
# A guest process that outlives the exec that started it: a line a second into a file.
TICKER = "sh -c 'while :; do echo tick >> /tmp/ticks; sleep 1; done' </dev/null >/dev/null 2>&1 & echo $!"


async def tick_count(vm: Machine) -> int:
    return int(stdout_of(await vm.exec(["sh", "-c", "cat /tmp/ticks | wc -l"])))


async def until_ticks_pass(vm: Machine, count: int) -> None:
    """Wait until the ticker has written more than ``count`` lines (it runs in the guest)."""
    while await tick_count(vm) <= count:
        await anyio.sleep(0.5)


async def uptime(vm: Machine) -> float:
    return float(stdout_of(await vm.exec(["cat", "/proc/uptime"])).split()[0])


async def test_live_snapshot_then_restore_carries_on(baked: Snapshot, tmp_path: Path) -> None:
    before = held()
    with anyio.fail_after(600):
        async with Machine.restore(baked) as vm:
            await vm.write_file("/root/before.txt", b"written before the snapshot")
            ticker_pid = int(stdout_of(await vm.exec(["sh", "-c", TICKER])))
            await until_ticks_pass(vm, 0)
            uptime_at_snapshot = await uptime(vm)
            snapshot = await vm.snapshot(tmp_path / "snap")
            # Live: the VM runs on, its ticker too.
            ticks_at_snapshot = await tick_count(vm)
            await until_ticks_pass(vm, ticks_at_snapshot)

        async with Machine.restore(tmp_path / "snap") as restored:
            assert await restored.read_file("/root/before.txt") == b"written before the snapshot"
            assert (await restored.exec(["kill", "-0", str(ticker_pid)])).exit_code == 0
            await until_ticks_pass(restored, ticks_at_snapshot)
            assert await uptime(restored) >= uptime_at_snapshot  # the guest clock does not go back
        assert snapshot.manifest == Snapshot.load(tmp_path / "snap").manifest
    assert_nothing_left(before)


async def test_clones_share_the_snapshot_but_not_their_writes(baked: Snapshot) -> None:
    before = held()
    seen: dict[int, bytes] = {}

    async def clone(index: int) -> None:
        async with Machine.restore(baked) as vm:
            await vm.write_file("/root/mine", str(index).encode())
            await anyio.sleep(1)  # every clone has written before any reads
            seen[index] = stdout_of(await vm.exec(["sh", "-c", "cat /root/mine; ls /root"]))

    with anyio.fail_after(900):
        async with anyio.create_task_group() as clones:
            for index in range(CLONES):
                clones.start_soon(clone, index)
    assert seen == {index: f"{index}mine\n".encode() for index in range(CLONES)}
    Snapshot.load(baked.path)  # the base is unchanged: its checksums still hold
    assert_nothing_left(before)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # boots cost ~30 s: one backend
async def test_a_writable_disk_is_frozen_and_each_restore_writes_its_own_copy(tmp_path: Path) -> None:
    before = held()
    volume = await Volume.create(tmp_path / "v.ext4", size_mib=64)
    with anyio.fail_after(900):
        async with Machine.boot(volumes={"/data": volume}) as vm:
            await shell(vm, "echo frozen > /data/note")
            snapshot = await vm.snapshot(tmp_path / "snap")
            await shell(vm, "echo later > /data/note")  # the VM's own disk moves on; the snapshot's does not
        (frozen,) = [disk.path for disk in snapshot.manifest.recipe.disks if disk.copy_on_write]
        assert frozen == Path("disks/vdb.img")
        async with Machine.restore(snapshot) as one, Machine.restore(snapshot) as two:
            for name, clone in (("one", one), ("two", two)):
                await shell(clone, f"echo {name} > /data/{name}")
            for name, clone in (("one", one), ("two", two)):
                assert await shell(clone, "cat /data/note; ls /data") == f"frozen\nlost+found\nnote\n{name}\n"
            await shell(one, "echo again >> /data/note")
            second = await one.snapshot(tmp_path / "snap2")  # from the clone's overlay over the frozen copy
        async with Machine.restore(second) as three:
            assert await shell(three, "cat /data/note /data/one") == "frozen\nagain\none\n"
    assert file_sha256(snapshot.path / frozen) == snapshot.manifest.sha256[str(frozen)]
    assert volume.path.stat().st_blocks >= (snapshot.path / frozen).stat().st_blocks  # sparse, as its source
    assert sorted(path.name for path in (snapshot.path / "disks").iterdir()) == ["vdb.img"]  # no overlay left
    assert_nothing_left(before)
    Snapshot.load(snapshot.path)
    for damage in (flip_a_byte, truncate, Path.unlink):
        damaged = tmp_path / f"damaged-{damage.__name__}"
        subprocess.run(["cp", "-r", "--sparse=always", str(snapshot.path), str(damaged)], check=True)
        damage(damaged / frozen)
        with pytest.raises(SnapshotError) as refused:
            Snapshot.load(damaged)
        assert refused.value.check == "disk", refused.value


def flip_a_byte(path: Path) -> None:
    with path.open("r+b") as f:
        byte = f.read(1)
        f.seek(0)
        f.write(bytes([byte[0] ^ 1]))


def truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # a boot of its own: one backend
async def test_two_vcpus_are_saved_and_restored(tmp_path: Path) -> None:
    with anyio.fail_after(600):
        async with Machine.start(vcpus=2) as vm:
            await vm.exec(["true"])
            await vm.snapshot(tmp_path / "snap", idle_within=30)
        async with Machine.restore(tmp_path / "snap") as restored:
            online = await restored.exec(["cat", "/sys/devices/system/cpu/online"])
            assert online.stdout == b"0-1\n"


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # a failing warm-up boots: one backend
async def test_bake_is_cached_by_image_assets_and_options(cached_bake: Snapshot) -> None:
    image = await Image.builtin()
    assert (await image.bake()).path == cached_bake.path
    with pytest.raises(WarmupFailed, match="exit 3"):
        await image.bake(warmup=["sh", "-c", "exit 3"])
