"""Volumes put into running guests: at a restore, in a pool's machine, by ``Machine.mount``, across a pause.

A machine started from an image keeps two empty drives (``volume_slots``), and so
does its snapshot: the suite's ``baked`` snapshot has them.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from asupermachine import DiskError, Machine, Pool, Runtime, Snapshot, Volume
from tests.support.exec_output import shell
from tests.support.resources import assert_nothing_left, held

pytestmark = pytest.mark.usefixtures("own_data_home")
DEADLINE = 600  # seconds: restores and execs under software KVM, with room


@pytest.mark.anyio
async def test_a_restore_mounts_its_volumes_which_keep_data_and_a_read_only_one_refuses_writes(
    baked: Snapshot, tmp_path: Path
) -> None:
    before = held()
    data = await Volume.create(tmp_path / "data.ext4", size_mib=16)
    reference = await Volume.create(tmp_path / "reference.ext4", size_mib=16)
    with anyio.fail_after(DEADLINE):
        async with Machine.restore(baked, volumes={"/data": data}) as vm:
            mounts = await shell(vm, "echo kept > /data/note; grep ' /data ' /proc/mounts")
            assert mounts.split()[2:4] == ["ext4", "rw,noatime,commit=1"]
            # The second drive: mounted read-only, and read-only for the guest's kernel too.
            await vm.mount(Volume(reference.path, read_only=True), "/srv/ref/")
            result = await vm.exec(["sh", "-c", "cat /sys/block/vdc/ro; touch /srv/ref/x"])
            assert (result.stdout, b"Read-only file system" in result.stderr) == (b"1\n", True), result
            with pytest.raises(DiskError, match="no empty drive"):
                await vm.mount(await Volume.create(tmp_path / "third.ext4", size_mib=16), "/third")
            with pytest.raises(ValueError, match="has a volume at /data already"):
                await vm.mount(reference, "/data")
            with pytest.raises(DiskError, match=f"in use writable by VM {vm.id}"):
                async with Machine.restore(baked, volumes={"/data": data}):
                    pass
        async with Machine.restore(baked, volumes={"/elsewhere": data}) as vm:
            assert await shell(vm, "cat /elsewhere/note") == "kept\n"
        with pytest.raises(DiskError, match="2 empty drives for 3 volumes"):
            async with Machine.restore(baked, volumes={f"/{n}": Volume(data.path, read_only=True) for n in "abc"}):
                pass
    assert_nothing_left(before)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_a_pool_lends_each_caller_its_own_volume_and_frees_it_when_the_block_ends(
    baked: Snapshot, tmp_path: Path
) -> None:
    alice = await Volume.create(tmp_path / "alice.ext4", size_mib=16)
    bob = await Volume.create(tmp_path / "bob.ext4", size_mib=16)
    with anyio.fail_after(DEADLINE):
        async with Pool(baked, min=2, max=2) as pool:

            async def work(volume: Volume, name: str) -> None:
                async with pool.acquire(volumes={"/work": volume}) as vm:
                    await shell(vm, f"echo {name} >> /work/log")

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(work, alice, "alice")
                tasks.start_soon(work, bob, "bob")
            await work(alice, "alice-again")  # the first machine let go of it on the way out
            async with pool.acquire() as vm:
                assert await shell(vm, "ls /work 2>&1 || true") == "ls: /work: No such file or directory\n"
        async with Machine.restore(baked, volumes={"/a": alice, "/b": bob}) as vm:
            assert await shell(vm, "cat /a/log /b/log") == "alice\nalice-again\nbob\n"


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_a_volume_mounted_while_running_comes_back_with_a_resume_and_belongs_to_the_pause(
    baked: Snapshot, tmp_path: Path
) -> None:
    volume = await Volume.create(tmp_path / "work.ext4", size_mib=16)
    with anyio.fail_after(DEADLINE):
        async with Runtime() as rt:
            vm = await rt.restore(baked)
            await vm.mount(volume, "/work")
            await shell(vm, "echo before > /work/note")
            paused = await vm.pause()
            assert list(paused.volumes) == ["/work"]
            with pytest.raises(DiskError, match=f"belongs to paused machine {vm.id}"):
                await rt.restore(baked, volumes={"/work": volume})
            vm = await rt.resume(paused.id)
            assert await shell(vm, "echo after >> /work/note; cat /work/note") == "before\nafter\n"
            await vm.close()  # its end detaches it: a machine that mounts it sees both lines
        async with Machine.restore(baked, volumes={"/work": volume}) as vm:
            assert await shell(vm, "cat /work/note") == "before\nafter\n"
