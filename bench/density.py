"""Density: many machines in one process and one runtime, restored from one snapshot.

Default: for each N in ``--counts``, one :class:`Runtime` restores N machines from
the built-in image's baked snapshot (``--parallel`` restores at once), all alive
together; then each runs one ``echo``, all N at once; then all are closed at once.
Per N: restores/s and time to all-restored, exec p50/p99 under that load, host RSS
and PSS per machine (PSS shows the copy-on-write sharing), threads and fds per
machine, KVM mappings, time to close, and what is left once everything is freed.

``--soak``: ``--soak-vms`` machines each run ``--soak-ops`` mixed operations (short
commands, 1 MiB outputs, ~100 KiB file writes and reads, execs timed out on
``sleep``, spawn+kill); fds, threads and RSS are read before, after a warm-up round
(one of each kind, so one-time caches do not count as growth), halfway and at the
end. Nothing may grow after the warm-up: the table says PASS or FAIL (a report).

Threads are ``threading.active_count()``; tasks are ``/proc/self/task``, which
also holds the kernel's per-VM ``kvm-nx-lpage-recovery`` thread. CPU s/exec is
this process's CPU time over the exec round per machine: nearly all of it is
guest-kernel emulation in the vCPU threads (system time). anyio keeps idle
worker threads until a later call finds them idle for 10 s, so every count is
taken "settled": after that long idle and one more worker call, which leaves one
pooled worker.

    .venv/bin/python bench/density.py [--counts 10,50,100,200] [--parallel 8]
    .venv/bin/python bench/density.py --soak [--soak-vms 20] [--soak-ops 100]
"""

from __future__ import annotations

import argparse
import faulthandler
import gc
import os
import resource
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
from _limits import raise_fd_limit
from _stats import measured_under, percentile

from asupermachine import ExecTimeout, Image, Machine, Runtime, Snapshot

GUEST_RAM_MIB = 256
# Guest RAM mappings are at least this big; thread stacks and allocator arenas are smaller.
GUEST_SIZED = 64 << 20
# anyio's WorkerThread.MAX_IDLE_TIME is 10 s; a little more so the pool is pruned.
POOL_IDLE = 10.5
# Stop restoring (and say so) if the host's MemAvailable falls below this.
MEMORY_FLOOR_MIB = 3072
# Before an N: assume each machine costs this many times the private memory and fds measured so far.
HEADROOM = 2.0
FIRST_GUESS_PRIVATE_MIB = 16.0
FIRST_GUESS_FDS = 64.0
WATCH_INTERVAL = 1.0
OUTPUT_BYTES = 1 << 20
FILE_BYTES = 100 << 10
EXEC_TIMEOUT = 0.5
# Soak: host-side RSS (outside guest RAM) may move this much without counting as growth.
HOST_RSS_SLACK_MIB = 8.0


# -- what the process holds ------------------------------------------------------


@dataclass(frozen=True)
class Footprint:
    """This process's memory (KiB), threads, fds and KVM mappings at one moment."""

    rss: int
    pss: int
    private: int
    guest_rss: int
    threads: int
    tasks: int
    fds: int
    kvm_mappings: int

    @property
    def host_rss(self) -> int:
        """RSS outside guest-RAM-sized mappings (KiB): the host side's own memory."""
        return self.rss - self.guest_rss


def footprint() -> Footprint:
    rollup: dict[str, int] = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        name, value, *_ = line.split()
        rollup[name.rstrip(":")] = int(value)
    guest_rss = kvm_mappings = 0
    large = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        first = line.split(maxsplit=1)[0]
        if "-" in first and not first.endswith(":"):  # a mapping's header line
            start, end = (int(part, 16) for part in first.split("-"))
            large = end - start >= GUEST_SIZED
            kvm_mappings += "anon_inode:kvm" in line
        elif first == "Rss:" and large:
            guest_rss += int(line.split()[1])
    return Footprint(
        rss=rollup["Rss"],
        pss=rollup["Pss"],
        private=rollup["Private_Clean"] + rollup["Private_Dirty"],
        guest_rss=guest_rss,
        threads=threading.active_count(),
        tasks=len(os.listdir("/proc/self/task")),
        fds=len(os.listdir("/proc/self/fd")) - 1,  # less the listing's own
        kvm_mappings=kvm_mappings,
    )


async def settled_footprint() -> Footprint:
    """The footprint once anyio's idle worker threads are pruned and garbage is collected."""
    await anyio.sleep(POOL_IDLE)
    await anyio.to_thread.run_sync(gc.collect)
    return footprint()


def mem_available_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("/proc/meminfo has no MemAvailable")


def process_cpu_seconds() -> float:
    """User plus system CPU time of this process so far (all threads: the vCPUs' guest-kernel work is system time)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def progress(message: str) -> None:
    """A line on stderr while a long run goes on (the tables go to stdout)."""
    print(f"  {message}", file=sys.stderr, flush=True)


# -- default mode: N machines at once ----------------------------------------------


@dataclass
class DensityRow:
    count: int
    restored: int = 0
    restore_seconds: float = 0.0
    exec_latencies: tuple[float, ...] = ()
    exec_cpu_seconds: float = 0.0
    alive: Footprint | None = None
    close_seconds: float = 0.0
    leftover: str = ""
    min_available_mib: float = 0.0
    notes: tuple[str, ...] = ()


class MemoryWatch:
    """Samples MemAvailable; cancels ``scope`` if it falls below :data:`MEMORY_FLOOR_MIB`."""

    def __init__(self, scope: anyio.CancelScope) -> None:
        self.scope = scope
        self.lowest = mem_available_mib()
        self.tripped = False

    def sample(self) -> bool:
        """Whether there is still room (and note the lowest reading)."""
        available = mem_available_mib()
        self.lowest = min(self.lowest, available)
        if available < MEMORY_FLOOR_MIB and not self.tripped:
            self.tripped = True
            self.scope.cancel()
        return not self.tripped

    async def run(self) -> None:
        while self.sample():
            await anyio.sleep(WATCH_INTERVAL)


async def restore_many(rt: Runtime, snapshot: Snapshot, count: int, parallel: int, watch: MemoryWatch,
                       failures: list[str]) -> list[Machine]:
    limiter = anyio.CapacityLimiter(parallel)
    machines: list[Machine] = []

    async def one() -> None:
        async with limiter:
            if not watch.sample():
                return
            try:
                machines.append(await rt.restore(snapshot))
            except Exception as error:
                failures.append(f"restore: {error!r}")

    async with anyio.create_task_group() as tasks:
        for _ in range(count):
            tasks.start_soon(one)
    return machines


async def exec_everywhere(machines: list[Machine], failures: list[str]) -> list[float]:
    latencies: list[float] = []

    async def one(vm: Machine) -> None:
        start = time.perf_counter()
        try:
            result = await vm.exec(["echo", vm.id])
        except Exception as error:
            failures.append(f"exec: {error!r}")
            return
        latencies.append(time.perf_counter() - start)
        if result.exit_code != 0 or result.stdout != f"{vm.id}\n".encode():
            failures.append(f"exec: {result.status}, stdout {result.stdout[:40]!r}")

    async with anyio.create_task_group() as tasks:
        for vm in machines:
            tasks.start_soon(one, vm)
    return latencies


async def close_all(machines: list[Machine]) -> float:
    start = time.perf_counter()
    async with anyio.create_task_group() as tasks:
        for vm in machines:
            tasks.start_soon(vm.close)
    return time.perf_counter() - start


def describe_leftover(base: Footprint, after: Footprint) -> str:
    parts = [
        f"{after.fds - base.fds:+d} fd" if after.fds != base.fds else "",
        f"{after.threads - base.threads:+d} thr" if after.threads != base.threads else "",
        f"{after.tasks - base.tasks:+d} task" if after.tasks != base.tasks else "",
        f"{after.kvm_mappings} kvm-map" if after.kvm_mappings else "",
        f"{(after.guest_rss - base.guest_rss) / 1024:+.0f} MiB guest" if after.guest_rss != base.guest_rss else "",
    ]
    return ", ".join(part for part in parts if part) or "none"


def room_check(count: int, base: Footprint, rows: list[DensityRow], fd_limit: int) -> str | None:
    """Why ``count`` more machines may not fit (None: they fit); prints the reckoning."""
    private_mib, fds = FIRST_GUESS_PRIVATE_MIB, FIRST_GUESS_FDS
    measured = [(row.alive, row.restored) for row in rows if row.alive is not None and row.restored]
    if measured:
        private_mib = max((alive.private - base.private) / 1024 / n for alive, n in measured)
        fds = max((alive.fds - base.fds) / n for alive, n in measured)
    need_mib = count * max(private_mib, 1.0) * HEADROOM + MEMORY_FLOOR_MIB
    need_fds = base.fds + count * fds * HEADROOM
    available = mem_available_mib()
    print(f"  N={count}: MemAvailable {available / 1024:.1f} GiB, need ~{need_mib / 1024:.1f} GiB "
          f"({private_mib:.1f} MiB private/VM x{HEADROOM:g} + {MEMORY_FLOOR_MIB / 1024:g} GiB floor; worst case "
          f"{count * GUEST_RAM_MIB / 1024:.0f} GiB if every guest dirtied all its RAM); "
          f"fds ~{need_fds:.0f} of {fd_limit}", flush=True)
    if need_mib > available:
        return f"skipped: ~{need_mib / 1024:.1f} GiB needed, {available / 1024:.1f} GiB available"
    if need_fds > fd_limit:
        return f"skipped: ~{need_fds:.0f} fds needed, limit {fd_limit}"
    return None


async def measure_count(snapshot: Snapshot, count: int, parallel: int, base: Footprint) -> DensityRow:
    row = DensityRow(count)
    failures: list[str] = []
    with anyio.CancelScope() as scope:
        watch = MemoryWatch(scope)
        async with anyio.create_task_group() as guard:
            guard.start_soon(watch.run)
            async with Runtime() as rt:
                start = time.perf_counter()
                machines = await restore_many(rt, snapshot, count, parallel, watch, failures)
                row.restore_seconds = time.perf_counter() - start
                row.restored = len(machines)
                progress(f"N={count}: {row.restored} restored in {row.restore_seconds:.1f} s")
                cpu = process_cpu_seconds()
                row.exec_latencies = tuple(await exec_everywhere(machines, failures))
                row.exec_cpu_seconds = process_cpu_seconds() - cpu
                progress(f"N={count}: execs done in {max(row.exec_latencies, default=0):.1f} s")
                row.alive = footprint()
                row.close_seconds = await close_all(machines)
            guard.cancel_scope.cancel()
    row.min_available_mib = watch.lowest
    if watch.tripped:
        failures.append(f"stopped: MemAvailable fell below {MEMORY_FLOOR_MIB} MiB")
    row.leftover = describe_leftover(base, await settled_footprint())
    row.notes = tuple(dict.fromkeys(failures))  # each distinct failure once
    return row


DENSITY_HEADER = (
    f"{'N':>4} {'alive':>5} {'restore/s':>9} {'restored s':>10} {'exec p50 s':>10} {'exec p99 s':>10} "
    f"{'CPU s/exec':>10} {'RSS MiB/VM':>10} {'PSS MiB/VM':>10} {'thr/VM':>6} {'task/VM':>7} {'fd/VM':>6} "
    f"{'KVM maps':>8} {'close s':>7} {'min avail GiB':>13}  leftover"
)


def density_line(row: DensityRow, base: Footprint) -> str:
    if row.alive is None or not row.restored:
        return f"{row.count:>4} {row.restored:>5}  {'; '.join(row.notes)}"
    alive, n = row.alive, row.restored
    latencies = list(row.exec_latencies) or [float("nan")]
    return (f"{row.count:>4} {n:>5} {n / row.restore_seconds:>9.1f} {row.restore_seconds:>10.1f} "
            f"{percentile(latencies, 0.5):>10.2f} {percentile(latencies, 0.99):>10.2f} "
            f"{row.exec_cpu_seconds / n:>10.2f} {(alive.rss - base.rss) / 1024 / n:>10.2f} "
            f"{(alive.pss - base.pss) / 1024 / n:>10.2f} {(alive.threads - base.threads) / n:>6.2f} "
            f"{(alive.tasks - base.tasks) / n:>7.2f} {(alive.fds - base.fds) / n:>6.1f} {alive.kvm_mappings:>8} "
            f"{row.close_seconds:>7.1f} {row.min_available_mib / 1024:>13.1f}  {row.leftover}")


def print_density(rows: list[DensityRow], base: Footprint, parallel: int) -> None:
    print(measured_under())
    print(f"\ndensity: built-in image restored from one snapshot, {GUEST_RAM_MIB} MiB guests, 1 vCPU, "
          f"{parallel} restores at once, all execs at once, {os.cpu_count()} cores")
    print(f"baseline (settled): RSS {base.rss / 1024:.0f} MiB, PSS {base.pss / 1024:.0f} MiB, "
          f"{base.threads} threads, {base.tasks} tasks, {base.fds} fds, {base.kvm_mappings} KVM mappings")
    print(DENSITY_HEADER)
    for row in rows:
        print(density_line(row, base))
    for row in rows:
        for note in row.notes:
            print(f"  N={row.count}: {note}")


async def density(snapshot: Snapshot, counts: list[int], parallel: int, fd_limit: int) -> None:
    # One machine first, so the baseline already holds what the first restore caches.
    async with Runtime() as rt, await rt.restore(snapshot) as vm:
        await vm.exec(["true"])
    base = await settled_footprint()
    rows: list[DensityRow] = []
    for count in counts:
        refusal = room_check(count, base, rows, fd_limit)
        if refusal is not None:
            rows.append(DensityRow(count, notes=(refusal,)))
            continue
        started = time.perf_counter()
        rows.append(await measure_count(snapshot, count, parallel, base))
        progress(f"N={count}: done in {time.perf_counter() - started:.0f} s")
        progress(f"{DENSITY_HEADER}\n{density_line(rows[-1], base)}")
    print_density(rows, base, parallel)


# -- soak: a few machines kept busy -----------------------------------------------


async def short_command(vm: Machine, step: int) -> str | None:
    result = await vm.exec(["sh", "-c", f"echo out{step}; echo err >&2; exit {step % 7}"])
    if (result.exit_code, result.stdout, result.stderr) != (step % 7, f"out{step}\n".encode(), b"err\n"):
        return f"short command: {result.status}, {result.stdout[:40]!r}, {result.stderr[:40]!r}"
    return None


async def large_output(vm: Machine, step: int) -> str | None:
    result = await vm.exec(["head", "-c", str(OUTPUT_BYTES), "/dev/zero"])
    if result.exit_code != 0 or result.stdout != bytes(OUTPUT_BYTES):
        return f"1 MiB output: {result.status}, {len(result.stdout)} bytes"
    return None


async def file_round_trip(vm: Machine, step: int) -> str | None:
    data = os.urandom(FILE_BYTES)
    await vm.write_file(f"/tmp/soak-{step % 3}", data)
    back = await vm.read_file(f"/tmp/soak-{step % 3}")
    return None if back == data else f"file round trip: wrote {len(data)} bytes, read {len(back)} different"


async def timed_out(vm: Machine, step: int) -> str | None:
    try:
        result = await vm.exec(["sleep", "10"], timeout=EXEC_TIMEOUT)
    except ExecTimeout:
        return None
    return f"sleep 10 with timeout={EXEC_TIMEOUT}: no ExecTimeout but {result.status}"


async def spawn_and_kill(vm: Machine, step: int) -> str | None:
    async with await vm.spawn(["sleep", "10"]) as process:
        await process.kill()
        status = await process.wait()
    return None if status.signal == 9 else f"spawn+kill: ended with {status}"


Operation = Callable[[Machine, int], Awaitable[str | None]]
# Twenty steps of the mix: 10 short commands, 4 large outputs, 4 file round trips, 1 timeout, 1 kill.
MIX: tuple[Operation, ...] = (
    short_command, large_output, short_command, file_round_trip, short_command,
    timed_out, short_command, large_output, file_round_trip, short_command,
    short_command, large_output, short_command, file_round_trip, short_command,
    spawn_and_kill, short_command, large_output, file_round_trip, short_command,
)
WARMUP: tuple[Operation, ...] = (short_command, large_output, file_round_trip, timed_out, spawn_and_kill)


async def run_everywhere(machines: list[Machine], steps: range, plan: tuple[Operation, ...],
                         failures: list[str], latencies: dict[str, list[float]]) -> None:
    async def busy(vm: Machine) -> None:
        for step in steps:
            operation = plan[step % len(plan)]
            start = time.perf_counter()
            try:
                failure = await operation(vm, step)
            except Exception as error:
                failure = f"{operation.__name__}: {error!r}"
            latencies.setdefault(operation.__name__, []).append(time.perf_counter() - start)
            if failure:
                failures.append(f"{vm.id} step {step}: {failure}")

    async with anyio.create_task_group() as tasks:
        for vm in machines:
            tasks.start_soon(busy, vm)


async def soak(snapshot: Snapshot, vms: int, ops: int, parallel: int) -> None:
    failures: list[str] = []
    latencies: dict[str, list[float]] = {}
    started = time.perf_counter()
    async with Runtime() as rt:
        limiter = anyio.CapacityLimiter(parallel)
        machines: list[Machine] = []

        async def restore_one() -> None:
            async with limiter:
                machines.append(await rt.restore(snapshot))

        async with anyio.create_task_group() as tasks:
            for _ in range(vms):
                tasks.start_soon(restore_one)
        readings = {"restored": await settled_footprint()}
        await run_everywhere(machines, range(len(WARMUP)), WARMUP, failures, {})
        readings["after warm-up"] = await settled_footprint()
        progress(f"soak: warm-up done at {time.perf_counter() - started:.0f} s")
        await run_everywhere(machines, range(ops // 2), MIX, failures, latencies)
        readings[f"after {ops // 2} ops/VM"] = await settled_footprint()
        progress(f"soak: half done at {time.perf_counter() - started:.0f} s")
        await run_everywhere(machines, range(ops // 2, ops), MIX, failures, latencies)
        readings[f"after {ops} ops/VM"] = await settled_footprint()
        alive = sum(vm.running for vm in machines)
        for vm in machines:
            await vm.close()
    print_soak(vms, ops, readings, latencies, failures, alive, time.perf_counter() - started)


def print_soak(vms: int, ops: int, readings: dict[str, Footprint], latencies: dict[str, list[float]],
               failures: list[str], alive: int, seconds: float) -> None:
    print(f"\nsoak: {vms} machines, {ops} operations each ({vms * ops} in all), all machines at once, "
          f"{seconds:.0f} s, {os.cpu_count()} cores; counts settled")
    print(f"{'reading':<20} {'fds':>6} {'threads':>7} {'tasks':>5} {'KVM maps':>8} {'RSS MiB':>8} {'host MiB':>8} "
          f"{'guest MiB':>9} {'PSS MiB':>8}")
    for name, held in readings.items():
        print(f"{name:<20} {held.fds:>6} {held.threads:>7} {held.tasks:>5} {held.kvm_mappings:>8} "
              f"{held.rss / 1024:>8.1f} {held.host_rss / 1024:>8.1f} {held.guest_rss / 1024:>9.1f} "
              f"{held.pss / 1024:>8.1f}")
    names = list(readings)
    warm, end = readings[names[1]], readings[names[-1]]
    growth = {
        "fds": (end.fds - warm.fds, end.fds - warm.fds <= 0, ""),
        "threads": (end.threads - warm.threads, end.threads - warm.threads <= 0, ""),
        "tasks": (end.tasks - warm.tasks, end.tasks - warm.tasks <= 0, ""),
        "KVM mappings": (end.kvm_mappings - warm.kvm_mappings, end.kvm_mappings <= warm.kvm_mappings, ""),
        "host RSS MiB": ((end.host_rss - warm.host_rss) / 1024,
                         (end.host_rss - warm.host_rss) / 1024 <= HOST_RSS_SLACK_MIB, f"slack {HOST_RSS_SLACK_MIB:g}"),
        "guest RAM RSS MiB": ((end.guest_rss - warm.guest_rss) / 1024, None, "guest pages first touched"),
    }
    print(f"\n{'growth since warm-up':<20} {'delta':>8}  verdict")
    for name, (delta, ok, why) in growth.items():
        verdict = "(report only)" if ok is None else "PASS" if ok else "FAIL"
        shown = f"{delta:>+8d}" if isinstance(delta, int) else f"{delta:>+8.1f}"
        print(f"{name:<20} {shown}  {verdict}{f' ({why})' if why else ''}")
    print(f"{'machines running':<20} {alive:>8}  {'PASS' if alive == vms else 'FAIL'}")
    print(f"{'failed operations':<20} {len(failures):>8}  {'PASS' if not failures else 'FAIL'}")
    print(f"\n{'operation':<16} {'count':>6} {'p50 s':>7} {'p99 s':>7}")
    for name, values in latencies.items():
        print(f"{name:<16} {len(values):>6} {percentile(values, 0.5):>7.2f} {percentile(values, 0.99):>7.2f}")
    for failure in failures[:20]:
        print(f"  {failure}")
    if len(failures) > 20:
        print(f"  ... and {len(failures) - 20} more")


async def run(args: argparse.Namespace, fd_limit: int) -> None:
    async with Runtime() as rt:
        snapshot = await rt.bake(await Image.builtin())
    if args.soak:
        await soak(snapshot, args.soak_vms, args.soak_ops, args.parallel)
    else:
        await density(snapshot, args.counts, args.parallel, fd_limit)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="10,50,100,200")
    parser.add_argument("--parallel", type=int, default=8, help="restores at once")
    parser.add_argument("--soak", action="store_true")
    parser.add_argument("--soak-vms", type=int, default=20)
    parser.add_argument("--soak-ops", type=int, default=100)
    args = parser.parse_args()
    args.counts = [int(count) for count in args.counts.split(",")]
    faulthandler.enable()  # a crash in a vCPU thread or ioctl still says where
    fd_limit = raise_fd_limit()
    print(f"RLIMIT_NOFILE soft limit {fd_limit}; MemAvailable {mem_available_mib() / 1024:.1f} GiB; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    anyio.run(run, args, fd_limit)


if __name__ == "__main__":
    main()
