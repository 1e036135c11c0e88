"""Cold boot: asupermachine vs QEMU ``-M microvm`` on the same kernel, initramfs, root disk, command line and CPU model.

Measures, per run, the time from starting the boot to the init's ready line on the
serial console and to the guest's exit, then prints min/median/max for each peer.
Then one more boot per peer, held at the ready line, counts KVM's exits by kind up
to it (our ``Machine.kvm_stats``, QEMU's QMP ``query-stats``: the same counters).

    .venv/bin/python bench/boot.py [--runs N] [--vcpus N]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
from _qemu import exit_status, qemu_command, qmp_kvm_stats
from _stats import measured_under

from asupermachine import Machine, ShutdownReason
from asupermachine._core.arch.x86_64.cpuid import detect_cpu_model
from asupermachine.guest import READY_MARKER, GuestAssets, resolve_assets

COMMAND = ["true"]
HELD_COMMAND = ["sleep", "600"]  # keeps the guest up while its exits are counted
MEMORY_MIB = 256
# KVM's counters worth a row (Documentation/virt/kvm/api.rst names them; both peers report these).
EXIT_COUNTERS = (
    "exits", "io_exits", "mmio_exits", "halt_exits", "halt_wakeup", "irq_exits", "irq_window_exits",
    "irq_injections", "signal_exits", "request_irq_exits", "insn_emulation", "hypercalls", "pf_taken",
)


@dataclass(frozen=True)
class Sample:
    ready: float
    exit: float


def boot_asupermachine(assets: GuestAssets, vcpus: int) -> Sample:
    async def once() -> Sample:
        start = time.perf_counter()
        ready = float("nan")
        async with Machine.boot(command=COMMAND, vcpus=vcpus) as vm:
            async for line in vm.console.lines():
                if line.startswith(READY_MARKER):
                    ready = time.perf_counter() - start
            result = await vm.wait()
        if result.reason is not ShutdownReason.EXIT or result.exit_code != 0:
            raise RuntimeError(f"asupermachine guest ended badly: {result}")
        return Sample(ready, time.perf_counter() - start)

    return anyio.run(once)


def boot_qemu(assets: GuestAssets, vcpus: int) -> Sample:
    start = time.perf_counter()
    ready = float("nan")
    with subprocess.Popen(
        qemu_command(assets, vcpus=vcpus, memory_mib=MEMORY_MIB, model=detect_cpu_model(), command=COMMAND),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as qemu:
        assert qemu.stdout is not None
        for raw in qemu.stdout:
            if raw.decode(errors="replace").startswith(READY_MARKER):
                ready = time.perf_counter() - start
        status = qemu.wait()
        if exit_status(status) != 0:
            stderr = qemu.stderr.read().decode() if qemu.stderr else ""
            raise RuntimeError(f"QEMU exited with {status}: {stderr[-500:]}")
    return Sample(ready, time.perf_counter() - start)


def exits_asupermachine(assets: GuestAssets, vcpus: int) -> dict[str, int]:
    async def once() -> dict[str, int]:
        async with Machine.boot(command=HELD_COMMAND, vcpus=vcpus) as vm:
            async for line in vm.console.lines():
                if line.startswith(READY_MARKER):
                    return vm.kvm_stats()
        raise RuntimeError("the guest stopped before its ready line")

    return anyio.run(once)


def exits_qemu(assets: GuestAssets, vcpus: int) -> dict[str, int]:
    with tempfile.TemporaryDirectory() as scratch:
        monitor = Path(scratch) / "qmp.sock"
        command = qemu_command(
            assets, vcpus=vcpus, memory_mib=MEMORY_MIB, model=detect_cpu_model(), command=HELD_COMMAND
        )
        with subprocess.Popen(
            [*command, "-qmp", f"unix:{monitor},server=on,wait=off"], stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        ) as qemu:
            assert qemu.stdout is not None
            try:
                for raw in qemu.stdout:
                    if raw.decode(errors="replace").startswith(READY_MARKER):
                        return qmp_kvm_stats(monitor)
                raise RuntimeError(f"QEMU stopped before the ready line ({qemu.wait()})")
            finally:
                qemu.kill()


def _stats(values: list[float]) -> str:
    return f"{min(values):7.2f} {statistics.median(values):7.2f} {max(values):7.2f}"


EXIT_COUNTS: dict[Callable[[GuestAssets, int], Sample], Callable[[GuestAssets, int], dict[str, int]]] = {
    boot_asupermachine: exits_asupermachine, boot_qemu: exits_qemu,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--vcpus", type=int, default=1)
    args = parser.parse_args()
    assets = resolve_assets(default_root=True)
    peers: dict[str, Callable[[GuestAssets, int], Sample]] = {"asupermachine": boot_asupermachine}
    if shutil.which("qemu-system-x86_64"):
        peers["qemu -M microvm"] = boot_qemu
    results: dict[str, list[Sample]] = {name: [] for name in peers}
    for _ in range(args.runs):
        for name, boot in peers.items():  # interleaved, so drift hits both peers alike
            results[name].append(boot(assets, args.vcpus))
    model = detect_cpu_model()
    print(measured_under())
    print(f"\ncold boot, {args.vcpus} vCPU, {MEMORY_MIB} MiB, command {COMMAND}, {args.runs} runs, "
          f"CPU model {model.value}, seconds")
    print(f"{'peer':<18} {'ready line: min   median  max':>30}   {'guest exit: min  median  max':>30}")
    for name, samples in results.items():
        print(f"{name:<18} {_stats([s.ready for s in samples]):>30}   {_stats([s.exit for s in samples]):>30}")
    counters = {name: EXIT_COUNTS[boot](assets, args.vcpus) for name, boot in peers.items()}
    print("\nKVM's counters from start to the ready line, one boot each")
    print(f"{'counter':<18}" + "".join(f"{name:>18}" for name in counters))
    for counter in EXIT_COUNTERS:
        print(f"{counter:<18}" + "".join(f"{counts.get(counter, 0):>18,}" for counts in counters.values()))


if __name__ == "__main__":
    main()
