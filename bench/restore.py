"""Restore from snapshot: asupermachine vs QEMU ``-M microvm`` (``migrate`` to a file, ``-incoming``).

Measured in one run, on the built-in image and the project's kernel:

- restore -> first ``exec`` result, p50/p99 over ``--runs`` restores (ours only:
  QEMU has no vsock here, so no agent);
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
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
from _limits import raise_fd_limit
from _qemu import qemu_command
from _stats import measured_under, percentile

from asupermachine import Image, Machine, Snapshot
from asupermachine._core.arch.x86_64.cpuid import detect_cpu_model
from asupermachine.guest import resolve_assets

MEMORY_MIB = 256
# The guest's main process: echo back each console line, with shell builtins only (no fork).
ECHO_LOOP = ["sh", "-c", "while read line; do echo echo:$line; done"]
PROBE = b"probe\n"
ECHOED = "echo:probe"
QEMU_POLL = 0.005
QEMU_MONITOR_TIMEOUT = 30.0
HMP_PROMPT = b"(qemu) "
PROBE_RETRY = 2.0


async def first_echo(vm: Machine) -> None:
    """Type probes until the guest's loop echoes one (input typed before the loop reads can be lost)."""
    async with anyio.create_task_group() as typing:

        async def keep_typing() -> None:
            while True:
                await vm.console.send(PROBE)
                await anyio.sleep(PROBE_RETRY)

        typing.start_soon(keep_typing)
        async for line in vm.console.lines():
            if line.strip() == ECHOED:
                break
        typing.cancel_scope.cancel()


async def snapshot_echo_guest(path: Path) -> Snapshot:
    async with Machine.boot(command=ECHO_LOOP, memory_mib=MEMORY_MIB) as vm:
        await first_echo(vm)  # booted, and the loop is reading
        return await vm.snapshot(path)


async def restore_to_exec(snapshot: Snapshot, runs: int) -> tuple[list[float], list[float]]:
    restored, answered = [], []
    for _ in range(runs):
        start = time.perf_counter()
        async with Machine.restore(snapshot) as vm:
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


class QemuPeer:
    """QEMU booting the echo guest, saving it with ``migrate``, and restoring it with ``-incoming``.

    Input typed while QEMU loads the incoming state is lost with the old serial
    state, so the probe is typed once the monitor reports the VM running.
    """

    def __init__(self, workdir: Path) -> None:
        self._state = workdir / "qemu-state"
        self._monitor = workdir / "qemu-monitor.sock"
        self._command = [
            *qemu_command(
                resolve_assets(default_root=True), vcpus=1, memory_mib=MEMORY_MIB, model=detect_cpu_model(),
                command=ECHO_LOOP,
            ),
            "-monitor", f"unix:{self._monitor},server=on,wait=off",
        ]

    def save(self) -> None:
        with self._qemu() as qemu:
            self._until_echo(qemu)
            with self._hmp() as hmp:
                hmp(f'migrate "exec:cat > {self._state}"')
                while "Migration status: completed" not in hmp("info migrate"):
                    time.sleep(QEMU_POLL)
                hmp("quit")
            qemu.wait()

    def restore_to_echo(self) -> float:
        start = time.perf_counter()
        with self._qemu("-incoming", f"exec:cat {self._state}") as qemu:
            with self._hmp() as hmp:
                while "running" not in hmp("info status"):
                    time.sleep(QEMU_POLL)
            self._until_echo(qemu)
            return time.perf_counter() - start

    @contextlib.contextmanager
    def _qemu(self, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
        """QEMU running the echo guest; killed when the block is left, however it is left."""
        self._monitor.unlink(missing_ok=True)  # a stale socket would look like this QEMU's
        with subprocess.Popen(
            [*self._command, *extra], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        ) as qemu:
            try:
                yield qemu
            finally:
                qemu.kill()

    @staticmethod
    def _until_echo(qemu: subprocess.Popen[bytes]) -> None:
        assert qemu.stdin and qemu.stdout
        stdin = qemu.stdin

        def type_probe() -> None:
            stdin.write(PROBE)
            stdin.flush()

        type_probe()
        retry = threading.Timer(PROBE_RETRY, type_probe)  # the first may come before the loop reads
        retry.start()
        try:
            for raw in qemu.stdout:
                if raw.decode(errors="replace").strip() == ECHOED:
                    return
        finally:
            retry.cancel()
        raise RuntimeError(f"QEMU ended without echoing: {qemu.stderr.read().decode() if qemu.stderr else ''}")

    @contextlib.contextmanager
    def _hmp(self) -> Iterator[Callable[[str], str]]:
        """A human-monitor session: call it with a command, get the reply up to the next prompt."""
        deadline = time.monotonic() + QEMU_MONITOR_TIMEOUT
        while not self._monitor.exists():
            if time.monotonic() > deadline:
                raise RuntimeError("QEMU's monitor socket never appeared")
            time.sleep(QEMU_POLL)
        with socket.socket(socket.AF_UNIX) as monitor:
            monitor.connect(str(self._monitor))
            monitor.settimeout(QEMU_MONITOR_TIMEOUT)
            pending = b""

            def until_prompt() -> str:
                nonlocal pending
                while HMP_PROMPT not in pending:
                    chunk = monitor.recv(65536)
                    if not chunk:
                        return pending.decode(errors="replace")  # QEMU closed the monitor (quit)
                    pending += chunk
                reply, _, pending = pending.partition(HMP_PROMPT)
                return reply.decode(errors="replace")

            def command(text: str) -> str:
                monitor.sendall(text.encode() + b"\n")
                return until_prompt()

            until_prompt()  # the banner
            yield command


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
