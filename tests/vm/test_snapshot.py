"""Snapshots on /dev/kvm: a live snapshot, restores that carry on, clones that share nothing they write."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from asupermachine import Disk, Image, Machine, Snapshot, SnapshotError, WarmupFailed
from tests.support.exec_output import stdout_of
from tests.support.resources import assert_nothing_left, held

pytestmark = pytest.mark.anyio
CLONES = 20
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


async def test_live_snapshot_then_restore_carries_on(tmp_path: Path) -> None:
    before = held()
    with anyio.fail_after(600):
        async with Machine.start() as vm:
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


async def test_a_vm_with_a_writable_disk_is_not_snapshotted(tmp_path: Path) -> None:
    disk = tmp_path / "rw.img"
    disk.write_bytes(bytes(1 << 20))
    with anyio.fail_after(600):
        async with Machine.boot(disks=[Disk(disk, read_only=False)]) as vm:
            with pytest.raises(SnapshotError) as refused:
                await vm.snapshot(tmp_path / "snap")
            assert refused.value.check == "disk"
            assert (await vm.exec(["true"])).exit_code == 0
    assert not (tmp_path / "snap").exists()


async def test_two_vcpus_are_saved_and_restored(tmp_path: Path) -> None:
    with anyio.fail_after(600):
        async with Machine.start(vcpus=2) as vm:
            await vm.exec(["true"])
            await vm.snapshot(tmp_path / "snap", idle_within=30)
        async with Machine.restore(tmp_path / "snap") as restored:
            online = await restored.exec(["cat", "/sys/devices/system/cpu/online"])
            assert online.stdout == b"0-1\n"


async def test_bake_is_cached_by_image_assets_and_options(baked: Snapshot) -> None:
    image = await Image.builtin()
    assert (await image.bake()).path == baked.path
    with pytest.raises(WarmupFailed, match="exit 3"):
        await image.bake(warmup=["sh", "-c", "exit 3"])
