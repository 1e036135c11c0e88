"""vsock throughput with 64 KiB writes, both directions, against the guest's own pipe floor.

QEMU offers no vsock device here (it needs /dev/vhost-vsock), so the peer is the
floor the guest kernel sets: ``dd`` moving the same bytes in 64 KiB writes
through a pipe between two guest processes. Everything is timed on the host clock.

    .venv/bin/python bench/vsock.py [--mib N] [--runs N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
from _stats import measured_under

from asupermachine import Machine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support.guest_tools import build_vsock_tool  # noqa: E402

CHUNK = 64 << 10
TOOL = "/tmp/vsock_tool"
PORT = 7100


async def guest_to_host(vm: Machine, mib: int) -> float:
    chunks = (mib << 20) // CHUNK
    async with vm.listen(PORT) as listener:
        async with await vm.spawn([TOOL, "send", str(PORT), "/tmp/chunk", str(chunks)]) as sender:
            stream = await listener.accept()
            start, received = time.perf_counter(), 0
            async with stream:
                while True:
                    try:
                        received += len(await stream.receive())
                    except anyio.EndOfStream:
                        break
            elapsed = time.perf_counter() - start
            await sender.wait()
    assert received == chunks * CHUNK
    return elapsed


async def host_to_guest(vm: Machine, mib: int) -> float:
    chunk = os.urandom(CHUNK)
    async with await vm.spawn([TOOL, "sink", str(PORT + 1), "/dev/null"]) as sink:
        await sink.stdout.receive()  # listening
        start = time.perf_counter()
        async with await vm.connect(PORT + 1) as stream:
            for _ in range((mib << 20) // CHUNK):
                await stream.send(chunk)
            await stream.send_eof()
            await sink.stdout.receive()  # the byte count: the guest has read everything
        elapsed = time.perf_counter() - start
    return elapsed


async def guest_pipe(vm: Machine, mib: int) -> float:
    count = (mib << 20) // CHUNK
    start = time.perf_counter()
    await vm.exec(
        ["sh", "-c", f"dd if=/dev/zero bs=64k count={count} 2>/dev/null | dd of=/dev/null bs=64k 2>/dev/null"]
    )
    piped = time.perf_counter() - start
    start = time.perf_counter()
    await vm.exec(["sh", "-c", "dd if=/dev/zero bs=64k count=0 2>/dev/null | dd of=/dev/null bs=64k 2>/dev/null"])
    return piped - (time.perf_counter() - start)


async def main(mib: int, runs: int) -> None:
    with tempfile.TemporaryDirectory() as work:
        tool = build_vsock_tool(Path(work))
    results: dict[str, list[float]] = {"guest -> host": [], "host -> guest": [], "floor: guest pipe": []}
    async with Machine.boot() as vm:
        await vm.write_file(TOOL, tool, mode=0o755)
        await vm.write_file("/tmp/chunk", os.urandom(CHUNK))
        for _ in range(runs):
            results["guest -> host"].append(await guest_to_host(vm, mib))
            results["host -> guest"].append(await host_to_guest(vm, mib))
            results["floor: guest pipe"].append(await guest_pipe(vm, mib))
    print(measured_under())
    print(f"\nvsock stream throughput, {mib} MiB in 64 KiB writes, {runs} runs, host clock")
    print(f"{'what':<20} {'median s':>9} {'MiB/s (median)':>15} {'MiB/s (best)':>13}")
    for name, times in results.items():
        median = statistics.median(times)
        print(f"{name:<20} {median:9.2f} {mib / median:15.1f} {mib / min(times):13.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    arguments = parser.parse_args()
    anyio.run(main, arguments.mib, arguments.runs)
