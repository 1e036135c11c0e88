"""The echo guest both peers run in the restore and pause benches, and QEMU's side of it.

Its main process echoes each console line back with shell builtins only (no fork),
so the first echo after a restore measures the VMM, not the guest's work.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
from _qemu import qemu_command

from asupermachine import Machine, Snapshot
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

    @property
    def state_size(self) -> int:
        """Bytes of the last saved state."""
        return self._state.stat().st_size

    def save(self) -> float:
        """Boot, echo once, then save and quit; seconds from the save's start to QEMU's exit (memory freed).

        The migration stops the VM as it completes (a VM stopped before it would stay stopped once restored).
        """
        with self._qemu() as qemu:
            self._until_echo(qemu)
            with self._hmp() as hmp:
                start = time.perf_counter()
                hmp(f'migrate "exec:cat > {self._state}"')
                while "Migration status: completed" not in hmp("info migrate"):
                    time.sleep(QEMU_POLL)
                hmp("quit")
            qemu.wait()
            return time.perf_counter() - start

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
