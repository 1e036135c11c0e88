"""exec(["true"]) round trip on a running VM, against the guest's own cost of spawning ``true``.

QEMU has no vsock device here, so the peer is the floor: the same spawn done by
a shell loop inside the guest, timed by the guest's own clock (``--spawns``
spawns, minus the same loop spawning nothing, divided by their number), so no
host time and no round trip is in it. The gap between the two is what vsock, the
agent and the host add.

    .venv/bin/python bench/exec.py [--runs N] [--spawns N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import anyio
from _stats import measured_under, percentile

from asupermachine import Machine

# The guest's uptime before and after COUNT iterations of BODY, read by shell builtins only
# (busybox's date has no nanoseconds; /proc/uptime counts hundredths of a second).
TIMED_LOOP = (
    "i=0; read start _ < /proc/uptime; while [ $i -lt {count} ]; do {body}; i=$((i+1)); done; "
    "read end _ < /proc/uptime; echo $start $end"
)


async def in_guest_seconds(vm: Machine, body: str, count: int) -> float:
    """Seconds the guest's shell spends on ``count`` iterations of ``body``, by the guest's clock."""
    result = await vm.exec(["sh", "-c", TIMED_LOOP.format(count=count, body=body)])
    start, end = map(float, result.stdout.split())
    return end - start


async def main(runs: int, spawns: int) -> None:
    async with Machine.boot() as vm:
        await vm.exec(["true"])  # wait for the agent, warm the page cache
        round_trips = []
        for _ in range(runs):
            start = time.perf_counter()
            await vm.exec(["true"])
            round_trips.append(time.perf_counter() - start)
        spawning = await in_guest_seconds(vm, "/bin/true", spawns)
        idle = await in_guest_seconds(vm, ":", spawns)
    in_guest = (spawning - idle) / spawns
    print(measured_under())
    print(f"\nexec round trip on a running VM, {runs} runs, milliseconds")
    print(f"{'what':<44} {'p50':>9} {'p99':>9} {'min':>9}")
    label = 'asupermachine vm.exec(["true"])'
    print(f"{label:<44} {statistics.median(round_trips) * 1e3:9.1f} "
          f"{percentile(round_trips, 0.99) * 1e3:9.1f} {min(round_trips) * 1e3:9.1f}")
    print(f"{'floor: one spawn of true inside the guest':<44} {in_guest * 1e3:9.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--spawns", type=int, default=100, help="spawns of the in-guest floor's loop")
    args = parser.parse_args()
    anyio.run(main, args.runs, args.spawns)
