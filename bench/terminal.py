"""Keystroke echo latency on a guest pty, on a running VM restored from the baked built-in image.

One byte is typed into ``proc.stdin`` and timed until its echo comes back on
``proc.stdout``, ``--count`` times, for two programs on the terminal:

- ``sh``: busybox ash's line editing echoes from user space (a read and a write
  in the guest per key);
- ``cat``: the kernel's line discipline echoes (canonical mode), the guest's floor.

Each line is a shell comment (``#xxx...``) ended every ``LINE`` keys, so nothing
runs and the line never wraps.

    .venv/bin/python bench/terminal.py [--count N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import anyio
from _stats import measured_under, percentile
from anyio.streams.buffered import BufferedByteReceiveStream

from asupermachine import Image, Machine
from asupermachine._core.agent.process import Process

KEY = b"x"
LINE = 60  # keys per line, well under the terminal's 80 columns
PROMPT = b"# "


SCREEN_LIMIT = 1 << 20  # bytes read looking for one marker before giving up


async def time_keys(process: Process, count: int, comment: bytes) -> list[float]:
    """Seconds from sending each key to seeing its echo; a new line every ``LINE`` keys."""
    output = BufferedByteReceiveStream(process.stdout)

    async def skip_past(marker: bytes) -> None:
        await output.receive_until(marker, SCREEN_LIMIT)

    if comment:
        await skip_past(PROMPT)
    latencies = []
    for i in range(count):
        if i % LINE == 0:
            if i:
                await process.stdin.send(b"\n")
                # sh prompts again; cat writes the line back after the echo of Enter.
                await skip_past(PROMPT if comment else KEY * LINE + b"\r\n")
            if comment:
                await process.stdin.send(comment)
                await skip_past(comment)
        start = time.perf_counter()
        await process.stdin.send(KEY)
        await skip_past(KEY)
        latencies.append(time.perf_counter() - start)
    return latencies


async def main(count: int) -> None:
    snapshot = await (await Image.builtin()).bake()  # the snapshot cache's, once baked
    results = {}
    async with Machine.restore(snapshot) as vm:
        await vm.exec(["true"])  # the agent answers: the restore is done
        for label, argv, comment in [
            ("sh (busybox line editing)", ["sh"], b"#"),
            ("cat (kernel line discipline)", ["cat"], b""),
        ]:
            async with await vm.spawn(argv, tty=True) as process:
                results[label] = await time_keys(process, count, comment)
    print(measured_under())
    print(f"\nkeystroke echo on a guest pty, {count} keys, milliseconds")
    print(f"{'program on the pty':<32} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}")
    for label, latencies in results.items():
        print(f"{label:<32} {statistics.median(latencies) * 1e3:8.2f} {percentile(latencies, 0.9) * 1e3:8.2f} "
              f"{percentile(latencies, 0.99) * 1e3:8.2f} {max(latencies) * 1e3:8.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200)
    anyio.run(main, parser.parse_args().count)
