"""exec(["true"]) round trip on a running VM, against the guest's own cost of spawning ``true``.

QEMU has no vsock device here, so the peer is the floor: the same spawn done by
a shell loop inside the guest (``LOOP`` spawns in one exec, minus one empty
exec, divided by ``LOOP``). The gap between the two is what vsock, the agent
and the host add.

    .venv/bin/python bench/exec.py [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import anyio
from _stats import measured_under, percentile

from asupermachine import Machine

LOOP = 10


async def main(runs: int) -> None:
    async with Machine.boot() as vm:
        await vm.exec(["true"])  # wait for the agent, warm the page cache
        round_trips = []
        for _ in range(runs):
            start = time.perf_counter()
            await vm.exec(["true"])
            round_trips.append(time.perf_counter() - start)
        loop_script = f"i=0; while [ $i -lt {LOOP} ]; do /bin/true; i=$((i+1)); done"
        start = time.perf_counter()
        await vm.exec(["sh", "-c", loop_script])
        looped = time.perf_counter() - start
        start = time.perf_counter()
        await vm.exec(["sh", "-c", "i=0; while [ $i -lt 0 ]; do i=1; done"])
        empty = time.perf_counter() - start
    in_guest = (looped - empty) / LOOP
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
    anyio.run(main, parser.parse_args().runs)
