"""Restore from snapshot: asupermachine vs QEMU ``-M microvm`` (``migrate`` to a file, ``-incoming``).

Measured in one run, on the built-in image and the project's kernel:

- restore -> first ``exec`` result, p50/p99 over ``--runs`` restores (ours only:
  QEMU has no vsock here, so no agent), and the same with a volume mounted at the
  restore (put in one of the snapshot's empty drives; QEMU's ``-M microvm`` has no
  hotplug to compare with);
- restore -> first console echo: the guest's shell echoes a line typed on the
  serial console; the same guest, snapshotted mid-loop, for both peers;
- restores per second, ``--parallel`` at once (restore until the guest has taken
  the vsock reset in, then leave);
- host RSS and PSS per clone with 1, 10, 50, 200 clones alive in one process,
  each having run one exec;
- for scale, our cold boot of the same image to its first exec result.

    .venv/bin/python bench/restore.py [--runs N] [--parallel N] [--clones 1,10,50,200]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import anyio
from _echo_guest import MEMORY_MIB, QemuPeer, first_echo, snapshot_echo_guest
from _limits import raise_fd_limit
from _stats import measured_under, percentile

from asupermachine import Image, Machine, Snapshot, Volume
from asupermachine._core.arch.x86_64.cpuid import detect_cpu_model


async def restore_to_exec(
    snapshot: Snapshot, runs: int, volumes: Mapping[str, Volume] | None = None
) -> tuple[list[float], list[float]]:
    restored, answered = [], []
    for _ in range(runs):
        start = time.perf_counter()
        async with Machine.restore(snapshot, volumes=volumes or {}) as vm:
            restored.append(time.perf_counter() - start)
            await vm.exec(["true"])
            answered.append(time.perf_counter() - start)
    return restored, answered


async def restore_to_echo(snapshot: Snapshot, runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        async with Machine.restore(snapshot) as vm:
            await first_echo(vm)
            samples.append(time.perf_counter() - start)
    return samples


async def restores_per_second(snapshot: Snapshot, parallel: int, total: int) -> float:
    limiter = anyio.Semaphore(parallel)

    async def one() -> None:
        async with limiter, Machine.restore(snapshot):
            pass

    start = time.perf_counter()
    async with anyio.create_task_group() as tasks:
        for _ in range(total):
            tasks.start_soon(one)
    return total / (time.perf_counter() - start)


def memory_kib() -> tuple[int, int]:
    """This process's (RSS, PSS) in KiB."""
    fields = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        name, value, *_ = line.split()
        fields[name.rstrip(":")] = int(value)
    return fields["Rss"], fields["Pss"]


async def per_clone_memory(snapshot: Snapshot, count: int) -> tuple[float, float]:
    """Extra (RSS, PSS) in MiB per clone with ``count`` clones alive, each after one exec."""
    base_rss, base_pss = memory_kib()
    ready = anyio.Event()
    done = 0
    measured: list[tuple[int, int]] = []

    async def clone() -> None:
        nonlocal done
        async with Machine.restore(snapshot) as vm:
            await vm.exec(["true"])
            done += 1
            if done == count:
                measured.append(memory_kib())
                ready.set()
            await ready.wait()

    async with anyio.create_task_group() as tasks:
        for _ in range(count):
            tasks.start_soon(clone)
    (rss, pss), = measured
    return (rss - base_rss) / 1024 / count, (pss - base_pss) / 1024 / count


def _ms(values: list[float]) -> str:
    return f"{percentile(values, 0.5) * 1e3:9.1f} {percentile(values, 0.99) * 1e3:9.1f} {min(values) * 1e3:9.1f}"


async def run(args: argparse.Namespace, workdir: Path) -> None:
    image = await Image.builtin()
    start = time.perf_counter()
    async with Machine.start(image) as vm:
        await vm.exec(["true"])
        cold = time.perf_counter() - start
    baked = await image.bake()
    echo_snapshot = await snapshot_echo_guest(workdir / "echo-snapshot")

    restored, answered = await restore_to_exec(baked, args.runs)
    volume = await Volume.create(workdir / "volume.ext4", size_mib=64)
    _, with_volume = await restore_to_exec(baked, args.runs, {"/data": volume})
    ours_echo = await restore_to_echo(echo_snapshot, args.echo_runs)
    rate = await restores_per_second(baked, args.parallel, args.parallel * 4)
    memory = {count: await per_clone_memory(baked, count) for count in args.clones}

    qemu_echo: list[float] = []
    if shutil.which("qemu-system-x86_64"):
        peer = QemuPeer(workdir)
        await anyio.to_thread.run_sync(peer.save)
        for _ in range(args.echo_runs):
            qemu_echo.append(await anyio.to_thread.run_sync(peer.restore_to_echo))

    print(measured_under())
    print(f"\nrestore from snapshot, built-in image, 1 vCPU, {MEMORY_MIB} MiB, CPU model {detect_cpu_model().value}")
    print(f"{'measure':<46} {'p50 ms':>9} {'p99 ms':>9} {'min ms':>9}")
    print(f"{'asupermachine restore (VM ready), ' + str(args.runs) + ' runs':<46} {_ms(restored)}")
    print(f"{'asupermachine restore -> first exec result':<46} {_ms(answered)}")
    print(f"{'  the same, mounting a volume at the restore':<46} {_ms(with_volume)}")
    print(f"{'asupermachine restore -> console echo, ' + str(args.echo_runs) + ' runs':<46} {_ms(ours_echo)}")
    if qemu_echo:
        print(f"{'qemu -M microvm -incoming -> console echo':<46} {_ms(qemu_echo)}")
    print(f"{'asupermachine cold boot -> first exec result':<46} {cold * 1e3:9.1f}")
    print(f"\nrestores per second, {args.parallel} at once, {os.cpu_count()} cores: {rate:.1f}")
    print(f"\n{'clones alive':>12} {'RSS MiB/clone':>14} {'PSS MiB/clone':>14}")
    for count, (rss, pss) in memory.items():
        print(f"{count:>12} {rss:>14.2f} {pss:>14.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--echo-runs", type=int, default=10)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--clones", default="1,10,50,200")
    args = parser.parse_args()
    raise_fd_limit()  # 200 clones hold ~5,000 fds
    args.clones = [int(count) for count in args.clones.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-restore-") as workdir:
        anyio.run(run, args, Path(workdir))


if __name__ == "__main__":
    main()
