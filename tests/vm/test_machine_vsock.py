"""vsock streams between the host and a real guest, both directions, against one VM per backend."""

from __future__ import annotations

import hashlib
import os
import signal
from pathlib import Path

import anyio
import pytest

from asupermachine import Machine, Snapshot, VsockConnectionReset, VsockStream
from tests.support.exec_output import stdout_of
from tests.support.guest_tools import build_vsock_tool
from tests.support.resources import assert_nothing_left, held

pytestmark = pytest.mark.anyio
TOOL = "/tmp/vsock_tool"
BLOCK = 1 << 20
GUEST_TO_HOST_MIB = 64
HOST_TO_GUEST_MIB = 16


async def drain(stream: VsockStream) -> bytes:
    """Hash a stream to its end; returns the sha256 digest."""
    digest = hashlib.sha256()
    while True:
        try:
            digest.update(await stream.receive())
        except anyio.EndOfStream:
            return digest.digest()


async def test_vsock_streams_carry_data_both_ways_and_report_resets(baked: Snapshot, tmp_path: Path) -> None:
    tool = build_vsock_tool(tmp_path)
    block = os.urandom(BLOCK)
    before = held()
    with anyio.fail_after(900):
        async with Machine.restore(baked) as vm:
            await vm.write_file(TOOL, tool, mode=0o755)
            await vm.write_file("/tmp/block", block)

            with pytest.raises(VsockConnectionReset):
                await vm.connect(7000)  # nothing listens yet

            # host -> guest: an echo server in the guest, reached with connect().
            async with await vm.spawn([TOOL, "echo", "7000"]) as server:
                assert await server.stdout.receive() == b"listening\n"
                async with await vm.connect(7000) as stream:
                    await stream.send(b"ping")
                    assert await stream.receive() == b"ping"
                    await stream.send_eof()
                    with pytest.raises(anyio.EndOfStream):
                        await stream.receive()
                assert (await server.wait()).exit_code == 0

            # guest -> host: a host listener reached from the guest, 64 MiB intact.
            async with vm.listen(7001) as listener:
                async with await vm.spawn([TOOL, "send", "7001", "/tmp/block", str(GUEST_TO_HOST_MIB)]) as sender:
                    async with await listener.accept() as stream:
                        assert await drain(stream) == hashlib.sha256(block * GUEST_TO_HOST_MIB).digest()
                    assert (await sender.wait()).exit_code == 0

            # host -> guest in bulk: the guest hashes what arrives.
            async with await vm.spawn([TOOL, "sink", "7002", "/tmp/received"]) as sink:
                assert await sink.stdout.receive() == b"listening\n"
                async with await vm.connect(7002) as stream:
                    for _ in range(HOST_TO_GUEST_MIB):
                        await stream.send(block)
                    await stream.send_eof()
                    assert await sink.stdout.receive() == f"{HOST_TO_GUEST_MIB * BLOCK}\n".encode()
            received = stdout_of(await vm.exec(["sha256sum", "/tmp/received"])).split()[0]
            assert received == hashlib.sha256(block * HOST_TO_GUEST_MIB).hexdigest().encode()

            # A guest peer that dies mid-stream: the host sees the connection go.
            async with await vm.spawn([TOOL, "echo", "7003"]) as server:
                assert await server.stdout.receive() == b"listening\n"
                async with await vm.connect(7003) as stream:
                    await server.send_signal(signal.SIGKILL)
                    assert (await server.wait()).signal == signal.SIGKILL
                    with pytest.raises((VsockConnectionReset, anyio.EndOfStream)):
                        while True:
                            await stream.send(b"x")
                            await stream.receive()
    assert_nothing_left(before)
