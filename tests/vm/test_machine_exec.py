"""exec through the guest agent over vsock: on a restored sandbox per backend, then disks and large
streams on one booted guest (asyncio: the event loop's backend does not touch the disks)."""

from __future__ import annotations

import hashlib
import os
import signal
from pathlib import Path

import anyio
import pytest

from asupermachine import Disk, ExecError, ExecResult, ExecTimeout, ExitStatus, GuestFileError, Machine, Snapshot
from tests.support.resources import assert_nothing_left, held

pytestmark = pytest.mark.anyio
CONCURRENT_EXECS = 20
STREAM_MIB = 10


async def test_exec_runs_commands_and_reports_how_they_ended(baked: Snapshot) -> None:
    before = held()
    with anyio.fail_after(600):
        async with Machine.restore(baked) as vm:
            assert await vm.exec(["echo", "hello"]) == ExecResult(ExitStatus(0, None), b"hello\n", b"")
            counted = vm.kvm_stats()
            await vm.exec(["true"])
            recounted = vm.kvm_stats()
            # The exec's virtio interrupts were acknowledged through MMIO exits the VMM served.
            assert recounted["mmio_exits"] > counted["mmio_exits"] and recounted["exits"] > counted["exits"]
            for code in (1, 255):
                assert (await vm.exec(["sh", "-c", f"exit {code}"])).exit_code == code
            both = await vm.exec(["sh", "-c", "echo out; echo err >&2"])
            assert (both.stdout, both.stderr) == (b"out\n", b"err\n")
            killed = await vm.exec(["sh", "-c", "kill -9 $$"])
            assert (killed.exit_code, killed.signal) == (None, signal.SIGKILL)
            applied = await vm.exec(["sh", "-c", "pwd; echo $GREETING"], workdir="/proc", env={"GREETING": "hi"})
            assert applied.stdout == b"/proc\nhi\n"
            as_nobody = await vm.exec(["sh", "-c", "id; echo $HOME"], user="nobody")
            assert as_nobody.stdout == b"uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)\n/nonexistent\n"
            as_ids = await vm.exec(["sh", "-c", "id -u; id -g; id -G"], user="1234:daemon")
            assert as_ids.stdout == b"1234\n1\n1\n"
            assert (await vm.exec(["id", "-u"], user=0)).stdout == b"0\n"
            with pytest.raises(ExecError, match="user ghost"):
                await vm.exec(["id"], user="ghost")
            with pytest.raises(ExecError, match="chdir"):
                await vm.exec(["true"], workdir="/no/such/dir")
            assert (await vm.exec(["cat"], stdin=b"round\x00trip\n" * 100)).stdout == b"round\x00trip\n" * 100

            with pytest.raises(ExecError, match="No such file") as missing:
                await vm.exec(["/no/such/program"])
            assert missing.value.errno == 2

            with pytest.raises(ExecTimeout):
                await vm.exec(["sleep", "1000"], timeout=2)
            assert (await vm.exec(["true"])).exit_code == 0  # still usable

            async with await vm.spawn(["cat"]) as cat:
                await cat.stdin.send(b"ping")
                assert await cat.stdout.receive() == b"ping"  # streamed, before stdin closes
                await cat.stdin.aclose()
                assert (await cat.wait()).exit_code == 0

            async with await vm.spawn(["sleep", "1000"]) as sleeper:
                assert sleeper.pid > 1
                await sleeper.send_signal(signal.SIGTERM)
                assert (await sleeper.wait()).signal == signal.SIGTERM

            blob = os.urandom(1 << 20)
            await vm.write_file("/tmp/blob", blob, mode=0o640)
            assert await vm.read_file("/tmp/blob") == blob
            assert (await vm.exec(["sh", "-c", "stat -c %a /tmp/blob"])).stdout == b"640\n"
            with pytest.raises(GuestFileError, match="No such file") as unreadable:
                await vm.read_file("/no/such/file")
            assert unreadable.value.errno == 2
            with pytest.raises(GuestFileError):
                await vm.write_file("/no/such/dir/file", b"x")

            results: list[bytes] = []

            async def one(i: int) -> None:
                results.append((await vm.exec(["echo", str(i)])).stdout)

            async with anyio.create_task_group() as tasks:
                for i in range(CONCURRENT_EXECS):
                    tasks.start_soon(one, i)
            assert sorted(results) == sorted(f"{i}\n".encode() for i in range(CONCURRENT_EXECS))

            # A process whose output nobody reads stalls itself only, not the agent's other sessions.
            async with await vm.spawn(["cat", "/dev/zero"]):
                await anyio.sleep(1)
                assert (await vm.exec(["echo", "still served"])).stdout == b"still served\n"

    assert_nothing_left(before)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.guest_heavy  # megabytes through an emulated guest kernel: 3 min under kvm_pvm, so the kvm_amd pass only
async def test_disks_and_large_output_streams_on_a_booted_guest(tmp_path: Path) -> None:
    read_only, writable = tmp_path / "ro.img", tmp_path / "rw.img"
    read_only.write_bytes(b"read-only disk contents".ljust(1 << 20, b"\0"))
    writable.write_bytes(bytes(1 << 20))
    disks = [Disk(read_only), Disk(writable, read_only=False)]
    before = held()
    with anyio.fail_after(600):
        async with Machine.boot(disks=disks) as vm:  # no command: the guest stays up for exec
            # virtio-blk: /dev/vda is the root, /dev/vdb the read-only disk, /dev/vdc the writable one.
            assert (await vm.exec(["head", "-c", "23", "/dev/vdb"])).stdout == b"read-only disk contents"
            refused = await vm.exec(["sh", "-c", "echo x | dd of=/dev/vdb bs=512 count=1 conv=sync 2>&1"])
            assert b"Operation not permitted" in refused.stdout
            await vm.write_file("/dev/vdc", b"from the guest".ljust(4096, b"\0"))

            blob = os.urandom(1 << 20)
            # 10 MiB on each output stream, intact.
            await vm.write_file("/tmp/block", blob)
            files = " ".join(["/tmp/block"] * STREAM_MIB)
            expected = hashlib.sha256(blob * STREAM_MIB).digest()
            out = await vm.exec(["sh", "-c", f"cat {files}"])
            assert hashlib.sha256(out.stdout).digest() == expected and out.stderr == b""
            err = await vm.exec(["sh", "-c", f"cat {files} >&2"])
            assert hashlib.sha256(err.stderr).digest() == expected and err.stdout == b""
    assert writable.read_bytes().startswith(b"from the guest")
    assert read_only.read_bytes().startswith(b"read-only disk contents")
    assert_nothing_left(before)
