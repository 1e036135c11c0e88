"""Pause and resume by id: asupermachine vs QEMU ``-M microvm`` (``stop``, ``migrate`` to a file, ``quit``;
``-incoming``), on the same echo guest.

Measured in one run, ``--runs`` times each:

- pause: from the call until the machine's memory is freed and its state is on
  disk (QEMU: from ``stop`` until the process has exited after the migration);
- resume -> first console echo (QEMU: ``-incoming`` until the echo);
- for the built-in image's sandbox, pause and resume -> first exec result
  (ours only: QEMU has no vsock here, so no agent), and the pause's size on disk.

    .venv/bin/python bench/pause.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import anyio
from _echo_guest import MEMORY_MIB, QemuPeer, first_echo, snapshot_echo_guest
from _stats import measured_under, percentile

from asupermachine import Image, Runtime, Snapshot


async def pause_and_resume(snapshot: Snapshot, runs: int, *, until_echo: bool) -> tuple[list[float], list[float], int]:
    """Restore ``snapshot`` once, then ``runs`` times: pause it, resume it until it answers (echo or exec)."""
    paused, resumed = [], []
    size = 0
    async with Runtime() as rt:
        vm = await rt.restore(snapshot)
        await (first_echo(vm) if until_echo else vm.exec(["true"]))
        for _ in range(runs):
            start = time.perf_counter()
            record = await vm.pause()
            paused.append(time.perf_counter() - start)
            size = await anyio.to_thread.run_sync(record.disk_usage)
            start = time.perf_counter()
            vm = await rt.resume(record.id)
            await (first_echo(vm) if until_echo else vm.exec(["true"]))
            resumed.append(time.perf_counter() - start)
        await vm.close()  # ended: its pause goes
    return paused, resumed, size


def _ms(values: list[float]) -> str:
    return f"{percentile(values, 0.5) * 1e3:9.1f} {percentile(values, 0.99) * 1e3:9.1f} {min(values) * 1e3:9.1f}"


async def run(args: argparse.Namespace, workdir: Path) -> None:
    os.environ["XDG_DATA_HOME"] = str(workdir / "data")  # the pauses go with the bench
    echo_snapshot = await snapshot_echo_guest(workdir / "echo-snapshot")
    echo_paused, echo_resumed, echo_size = await pause_and_resume(echo_snapshot, args.runs, until_echo=True)
    baked = await (await Image.builtin()).bake()
    sandbox_paused, sandbox_resumed, sandbox_size = await pause_and_resume(baked, args.runs, until_echo=False)

    qemu_saved: list[float] = []
    qemu_echo: list[float] = []
    qemu_size = 0
    if shutil.which("qemu-system-x86_64"):
        peer = QemuPeer(workdir)
        for _ in range(args.runs):
            qemu_saved.append(await anyio.to_thread.run_sync(peer.save))
            qemu_echo.append(await anyio.to_thread.run_sync(peer.restore_to_echo))
        qemu_size = peer.state_size

    print(measured_under())
    print(f"\npause and resume, 1 vCPU, {MEMORY_MIB} MiB, {args.runs} runs each")
    print(f"{'measure':<52} {'p50 ms':>9} {'p99 ms':>9} {'min ms':>9}")
    print(f"{'asupermachine pause (echo guest)':<52} {_ms(echo_paused)}")
    if qemu_saved:
        print(f"{'qemu stop + migrate to file + quit (echo guest)':<52} {_ms(qemu_saved)}")
    print(f"{'asupermachine resume -> console echo':<52} {_ms(echo_resumed)}")
    if qemu_echo:
        print(f"{'qemu -incoming -> console echo':<52} {_ms(qemu_echo)}")
    print(f"{'asupermachine pause (built-in image sandbox)':<52} {_ms(sandbox_paused)}")
    print(f"{'asupermachine resume -> first exec result':<52} {_ms(sandbox_resumed)}")
    print(f"\n{'on disk':<52} {'MiB':>9}")
    print(f"{'asupermachine pause, echo guest':<52} {echo_size / 2**20:9.1f}")
    print(f"{'asupermachine pause, sandbox':<52} {sandbox_size / 2**20:9.1f}")
    if qemu_echo:
        print(f"{'qemu migration file, echo guest':<52} {qemu_size / 2**20:9.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-pause-") as workdir:
        anyio.run(run, args, Path(workdir))


if __name__ == "__main__":
    main()
