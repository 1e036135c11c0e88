"""virtio-blk sequential read: asupermachine vs QEMU ``-M microvm`` on the same guest, disk and command.

Each peer boots the project's guest with a data disk of random bytes as ``/dev/vdb``
and runs ``dd`` over all of it in 1 MiB direct reads (through the guest's page
cache, software KVM's emulated guest kernel would be all that is measured); the
host stamps the console lines the guest prints just before and after, so both
peers are timed the same way.

    .venv/bin/python bench/blk.py [--runs N] [--mib N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import anyio
from _qemu import qemu_command
from _stats import measured_under

from asupermachine import Disk, Machine
from asupermachine._core.arch.x86_64.cpuid import detect_cpu_model
from asupermachine.guest import GuestAssets, resolve_assets

MEMORY_MIB = 256
START, END = "blk-start", "blk-end"
COMMAND = ["sh", "-c", f"echo {START}; dd if=/dev/vdb of=/dev/null bs=1M iflag=direct 2>/dev/null; echo {END}"]


class MarkerClock:
    """Times the span between the guest's start and end lines, stamped as each line arrives."""

    def __init__(self) -> None:
        self._started = float("nan")
        self.elapsed: float | None = None

    def see(self, line: str) -> None:
        if line.strip() == START:
            self._started = time.perf_counter()
        elif line.strip() == END:
            self.elapsed = time.perf_counter() - self._started

    def result(self) -> float:
        if self.elapsed is None:
            raise RuntimeError("the guest did not print the end marker")
        return self.elapsed


def read_asupermachine(assets: GuestAssets, disk: Path) -> float:
    async def once() -> float:
        clock = MarkerClock()
        async with Machine.boot(command=COMMAND, disks=[Disk(disk)], memory_mib=MEMORY_MIB) as vm:
            async for line in vm.console.lines():
                clock.see(line)
            await vm.wait()
        return clock.result()

    return anyio.run(once)


def read_qemu(assets: GuestAssets, disk: Path) -> float:
    command = qemu_command(
        assets, vcpus=1, memory_mib=MEMORY_MIB, model=detect_cpu_model(), command=COMMAND, disks=[disk]
    )
    clock = MarkerClock()
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as qemu:
        assert qemu.stdout is not None
        for raw in qemu.stdout:
            clock.see(raw.decode(errors="replace"))
    return clock.result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mib", type=int, default=64)
    args = parser.parse_args()
    assets = resolve_assets(default_root=True)
    peers: dict[str, Callable[[GuestAssets, Path], float]] = {"asupermachine": read_asupermachine}
    if shutil.which("qemu-system-x86_64"):
        peers["qemu -M microvm"] = read_qemu
    results: dict[str, list[float]] = {name: [] for name in peers}
    with tempfile.TemporaryDirectory() as work:
        disk = Path(work) / "data.img"
        disk.write_bytes(os.urandom(args.mib << 20))
        for _ in range(args.runs):
            for name, read in peers.items():  # interleaved, so drift hits both peers alike
                results[name].append(read(assets, disk))
    print(measured_under())
    print(f"\nvirtio-blk sequential read of {args.mib} MiB (dd bs=1M iflag=direct), {args.runs} runs")
    print(f"{'peer':<18} {'median s':>9} {'min s':>9} {'MiB/s (median)':>15}")
    for name, times in results.items():
        median = statistics.median(times)
        print(f"{name:<18} {median:9.2f} {min(times):9.2f} {args.mib / median:15.1f}")


if __name__ == "__main__":
    main()
