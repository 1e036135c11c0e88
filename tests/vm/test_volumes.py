"""Volumes in real guests: data outlives its machine, one writer at a time, readers share, a kill is recoverable.

Boots cost ~30 s under software KVM: asyncio only, and machines that can boot
side by side do.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import anyio
import pytest

from asupermachine import DiskError, Machine, Volume
from tests.support.exec_output import shell
from tests.support.resources import assert_nothing_left, held

ASYNCIO_ONLY = pytest.mark.parametrize("anyio_backend", ["asyncio"])
DEADLINE = 600  # seconds: a few boots and execs, with room


def fsck(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["e2fsck", "-n", "-f", str(path)], capture_output=True, text=True)


@ASYNCIO_ONLY
@pytest.mark.anyio
@pytest.mark.guest_heavy  # ext4 writes and journal replays in an emulated kernel: minutes under kvm_pvm
async def test_data_outlives_its_writer_one_writer_at_a_time_and_readers_share(tmp_path: Path) -> None:
    before = held()
    volume = await Volume.create(tmp_path / "data.ext4", size_mib=16)
    shared = Volume(volume.path, read_only=True)
    with anyio.fail_after(DEADLINE):
        async with Machine.boot(volumes={"/data": volume}) as writer:
            assert "rw" in await shell(writer, "echo kept > /data/note && grep ' /data ' /proc/mounts")
            for second in (volume, shared):
                with pytest.raises(DiskError, match=f"in use writable by VM {writer.id}"):
                    async with Machine.boot(volumes={"/data": second}):
                        pass
        async with Machine.boot(volumes={"/data": shared}) as one, Machine.boot(volumes={"/srv/in": shared}) as two:
            with pytest.raises(DiskError, match="in use read-only by other VMs"):
                async with Machine.boot(volumes={"/data": volume}):
                    pass
            outputs = {}

            async def read(vm: Machine, where: str) -> None:
                outputs[vm.id] = await shell(vm, f"cat {where}/note; touch {where}/x 2>/dev/null || echo refused")

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(read, one, "/data")
                tasks.start_soon(read, two, "/srv/in")
            assert outputs == {one.id: "kept\nrefused\n", two.id: "kept\nrefused\n"}
    assert_nothing_left(before)


@ASYNCIO_ONLY
@pytest.mark.anyio
@pytest.mark.guest_heavy  # ext4 writes and journal replays in an emulated kernel: minutes under kvm_pvm
async def test_a_volume_killed_mid_write_keeps_what_was_synced_and_is_clean_after_a_replay(tmp_path: Path) -> None:
    volume = await Volume.create(tmp_path / "data.ext4", size_mib=16)
    with anyio.fail_after(DEADLINE):
        async with Machine.boot(volumes={"/data": volume}) as vm:
            await shell(vm, "echo synced > /data/first && sync")
            writer = "i=0; while :; do echo line-$i >> /data/log; i=$((i+1)); done"
            await shell(vm, f"({writer}) </dev/null >/dev/null 2>&1 &")
            await shell(vm, "until [ $(wc -l < /data/log) -ge 100 ]; do sleep 0.1; done")
            vm._halt()  # as when its process is killed: no sync, the writer still writing
            await vm.wait()
        async with Machine.boot(volumes={"/data": volume}) as vm:
            assert await shell(vm, "cat /data/first") == "synced\n"
            written, _, unwritten = (await shell(vm, "cat /data/log 2>/dev/null || true")).partition("\0")
            lines = written.splitlines()
            assert lines == [f"line-{i}" for i in range(len(lines))]  # a prefix of what the writer wrote
            # Appends whose size the journal committed but whose data the guest never wrote out read as
            # zeros, as after any power cut on ext4: never as other data.
            assert unwritten.strip("\0") == ""
            await shell(vm, "umount /data")  # a clean detach: the journal replayed and checkpointed
    result = fsck(volume.path)
    assert result.returncode == 0, result.stdout + result.stderr
