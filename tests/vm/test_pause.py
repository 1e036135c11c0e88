"""Pause and resume by id in real guests: processes, files, volumes and timeouts carry over, across processes.

Paused machines go to ``$XDG_DATA_HOME``, here each test's own directory.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import anyio
import pytest

from asupermachine import (
    CloseReason,
    DiskError,
    ExecError,
    GuestProcess,
    Machine,
    MachineClosed,
    MachineInUse,
    PausedMachineNotFound,
    Process,
    Runtime,
    Snapshot,
    SnapshotError,
    Volume,
)
from tests.support.exec_output import shell
from tests.support.resources import assert_nothing_left, held

pytestmark = pytest.mark.usefixtures("own_data_home")
DEADLINE = 600  # seconds: boots, restores and execs under software KVM, with room


@pytest.mark.anyio
async def test_pause_resume_twice_keeps_writes_processes_and_the_id(baked: Snapshot) -> None:
    before = held()
    with anyio.fail_after(DEADLINE):
        async with Runtime() as rt:
            vm = await rt.restore(baked)
            machine_id = vm.id
            # A process that outlives every exec: it counts, so a resumed one shows it ran on.
            await shell(vm, "(while :; do echo tick >> /root/ticks; sleep 0.2; done) </dev/null >/dev/null 2>&1 &"
                            " echo $! > /root/pid; echo one > /root/first")
            paused = await vm.pause()
            assert (paused.id, vm.closed, vm.close_reason) == (machine_id, True, CloseReason.PAUSED)
            with pytest.raises(MachineClosed, match="was paused"):
                await vm.exec(["true"])
            assert [machine.id for machine in await rt.paused()] == [machine_id]
            assert paused.memory_mib == 256 and paused.timeout is None and not paused.is_resumed()

            vm = await rt.resume(machine_id)
            assert vm.id == machine_id and (await rt.paused())[0].is_resumed()
            with pytest.raises(MachineInUse):
                await rt.resume(machine_id)
            assert await shell(vm, "hostname; cat /root/first; kill -0 $(cat /root/pid) && echo alive") == (
                f"{machine_id}\none\nalive\n"
            )
            ticks = int(await shell(vm, "wc -l < /root/ticks"))
            await shell(vm, "echo two > /root/second")
            await vm.pause()

            vm = await rt.resume(machine_id)
            assert await shell(vm, "cat /root/first /root/second; kill -0 $(cat /root/pid) && echo alive") == (
                                   "one\ntwo\nalive\n"
            )
            await shell(vm, f"until [ $(wc -l < /root/ticks) -gt {ticks} ]; do sleep 0.1; done")
            await vm.close()  # ended for good: its pause goes
            assert await rt.paused() == []
            with pytest.raises(PausedMachineNotFound):
                await rt.resume(machine_id)
    assert_nothing_left(before)


async def numbers(process: Process, at_least: int) -> list[int]:
    """Whole lines of a counting process's output until one reaches ``at_least``."""
    seen, text = [], b""
    while not seen or seen[-1] < at_least:
        text += await process.stdout.receive()
        *lines, text = text.split(b"\n")
        seen += [int(line) for line in lines]
    return seen


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_a_spawned_process_runs_on_through_a_pause_is_listed_and_attached_again_by_its_pid(
    baked: Snapshot,
) -> None:
    with anyio.fail_after(DEADLINE):
        async with Runtime() as rt:
            vm = await rt.restore(baked)
            counter_argv = ("sh", "-c", "i=0; while :; do echo $i; i=$((i+1)); sleep 0.01; done")
            counter = await vm.spawn(counter_argv)
            before = await numbers(counter, 5)
            waiting = await vm.spawn(["sh", "-c", "read line; echo got $line; exit 3"])
            paused = await vm.pause()
            vm = await rt.resume(paused.id)
            listed = {process.pid: process for process in await vm.processes()}
            assert listed[counter.pid] == GuestProcess(counter.pid, counter_argv, attached=False, running=True)
            assert (listed[waiting.pid].attached, len(listed)) == (False, 2)
            with pytest.raises(ExecError, match="no process 1 waits"):
                await vm.attach(1)
            async with await vm.attach(counter.pid) as again:
                assert {process.pid: process.attached for process in await vm.processes()}[counter.pid]
                after = await numbers(again, before[-1] + 20)
                assert after == sorted(after) and after[0] > before[-1], (before, after)
                with pytest.raises(ExecError):
                    await vm.attach(counter.pid)  # once
                await again.send_signal(signal.SIGTERM)
                assert (await again.wait()).signal == signal.SIGTERM
            # Its stdin was kept too: what it reads now comes from its new caller.
            async with await vm.attach(waiting.pid) as again:
                await again.stdin.send(b"hello\n")
                assert (await again.stdout.receive(), (await again.wait()).exit_code) == (b"got hello\n", 3)
            await vm.close()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_a_paused_timeout_stops_counting_and_a_resume_in_another_process_goes_on(
    baked: Snapshot, own_data_home: Path
) -> None:
    with anyio.fail_after(DEADLINE):
        async with Machine.restore(baked, timeout=3600) as vm:
            await shell(vm, "echo from-the-first > /root/note")
            first = await vm.pause()
        assert first.timeout is not None and 3000 < first.timeout <= 3600
        time.sleep(1.5)  # paused: none of this counts
        script = textwrap.dedent(f"""
            import anyio, json
            from asupermachine import Machine

            async def main():
                async with Machine.resume({first.id!r}) as vm:
                    note = (await vm.exec(["cat", "/root/note"])).stdout.decode()
                    await vm.exec(["sh", "-c", "echo from-the-second >> /root/note"])
                    paused = await vm.pause()
                print(json.dumps({{"note": note, "timeout": paused.timeout}}))

            anyio.run(main)
        """)
        started = time.monotonic()
        child = await anyio.run_process(
            [sys.executable, "-c", script], env={**os.environ, "XDG_DATA_HOME": str(own_data_home)}, check=False
        )
        resumed_for = time.monotonic() - started
        assert child.returncode == 0, child.stderr.decode()
        said = json.loads(child.stdout)
        assert said["note"] == "from-the-first\n"
        assert first.timeout - resumed_for <= said["timeout"] < first.timeout
        async with Machine.resume(first.id) as vm:
            assert await shell(vm, "cat /root/note") == "from-the-first\nfrom-the-second\n"


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_a_paused_machine_keeps_its_volume_and_a_damaged_or_changed_pause_is_refused(tmp_path: Path) -> None:
    volume = await Volume.create(tmp_path / "work.ext4", size_mib=16)
    with anyio.fail_after(DEADLINE):
        async with Machine.boot(volumes={"/work": volume}) as vm:
            await shell(vm, "echo before > /work/a")
            paused = await vm.pause()
        assert [kept.path for kept in paused.kept] == [volume.path]
        for other in (volume, Volume(volume.path, read_only=True)):
            with pytest.raises(DiskError, match=f"belongs to paused machine {paused.id}"):
                async with Machine.boot(volumes={"/work": other}):
                    pass
        async with Machine.resume(paused.id) as vm:
            assert await shell(vm, "cat /work/a; echo after > /work/b; cat /work/b") == "before\nafter\n"
            await vm.pause()

        record = paused.path / "machine.json"
        good = record.read_bytes()
        record.write_bytes(good[:-10])
        with pytest.raises(SnapshotError, match="damaged"):
            async with Machine.resume(paused.id):
                pass
        record.write_bytes(good)
        os.utime(volume.path)  # as if someone wrote it meanwhile
        with pytest.raises(SnapshotError, match="changed since it paused"):
            async with Machine.resume(paused.id):
                pass
        os.utime(volume.path, ns=(paused.kept[0].mtime_ns, paused.kept[0].mtime_ns))
        # The pause vouched for its memory file as it wrote it; a later write still voids that.
        with (paused.path / "snapshot" / "memory").open("r+b") as memory:
            memory.seek(os.lseek(memory.fileno(), 0, os.SEEK_DATA))
            byte = memory.read(1)
            memory.seek(-1, os.SEEK_CUR)
            memory.write(bytes([byte[0] ^ 1]))
        with pytest.raises(SnapshotError, match="memory"):
            async with Machine.resume(paused.id):
                pass
        assert (tmp_path / "data" / "asupermachine" / "paused" / paused.id / "snapshot").is_dir()  # nothing lost
        async with Runtime() as rt:
            await rt.remove_paused(paused.id)
            assert await rt.paused() == []
    # Removed, the pause frees its volume as a killed machine would: the journal replayed, it holds every write.
    await Volume(volume.path, read_only=True).settle()
    check = subprocess.run(["e2fsck", "-n", "-f", str(volume.path)], capture_output=True, text=True)
    assert check.returncode == 0, check
    listing = subprocess.run(["debugfs", "-R", "ls -l /", str(volume.path)], capture_output=True, text=True)
    assert " a" in listing.stdout and " b" in listing.stdout, listing
