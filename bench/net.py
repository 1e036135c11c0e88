"""virtio-net over passt: asupermachine vs QEMU ``-M microvm`` (``-netdev stream``) on the same guest.

Both peers boot the same kernel, initramfs, root disk and CPU model, with eth0
set up by init the same way (10.0.2.15/24, MTU 32744) and a passt of their own
with the same options (egress NAT, the host's loopback reachable, three host
ports published). Each runs one guest script as its kernel command (QEMU has
no agent here), which drives the phases against a host process (bench/_net_host.py)
on the host's loopback; every phase is timed on the host clock:

- TCP guest -> host by egress: ``dd | nc 10.0.2.2 PORT`` into a host sink, first byte to EOF;
- TCP host -> guest through a published port: the host sends to the guest's
  ``nc -l -e wc -c`` until it answers with the count (everything read);
- TCP guest -> host through a published port: the host downloads a file from the guest's busybox
  ``httpd``, first byte to EOF (busybox ``nc -l`` never saw the host's connections here);
- connections per second: sequential HTTP/1.0 GETs, a new connection each, to the guest's busybox ``httpd``.

For ours alone: restore -> first exec of the built-in image baked with a
network and baked with ``network=False``.

    .venv/bin/python bench/net.py [--kib N] [--connections N] [--restores N] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import anyio
from _net_host import CHUNK, HostResults, Plan, drive
from _qemu import QemuNic, exit_status, qemu_command
from _stats import measured_under

from asupermachine import Image, Machine, Network, Snapshot
from asupermachine._core.arch.x86_64.cpuid import detect_cpu_model
from asupermachine.guest import GuestAssets, resolve_assets

MEMORY_MIB = 256
INGRESS_PORT, HTTP_PORT = 8000, 8080
"""Guest ports of the sink and httpd, each published on a free host port."""
RESULT_TIMEOUT = 30.0
"""Seconds the host side may take to report once the guest has finished."""
GUEST_TIMEOUT = 900.0
"""Seconds a peer's whole guest run may take."""


def guest_script(control: int, sink: int, blocks: int, host: str) -> str:
    """The guest's part, one line without double quotes (a kernel command-line word cannot hold them).

    ``r WORD`` announces a phase and returns when the host has done its part;
    ``l HEXPORT`` waits until a guest socket listens on that port (busybox listens on ``::``), so
    the host never connects before the guest's server is there. A failed step ends
    the script (the host side closes its ports when it fails), so neither side hangs.
    """
    zeros = f"dd if=/dev/zero bs=64k count={blocks} 2>/dev/null"
    return "; ".join([
        f"r(){{ echo $1 | nc {host} {control} || exit 3; }}",
        "l(){ until grep -q :$1.0*:0000.0A /proc/net/tcp /proc/net/tcp6; do usleep 20000; done; }",
        f"{zeros} | nc {host} {sink} || exit 2",
        f"nc -l -p {INGRESS_PORT} -e wc -c & l {INGRESS_PORT:04X}",
        "r ingress",
        "wait",
        "mkdir -p /tmp/www",
        "echo ok > /tmp/www/index.html",
        f"{zeros} > /tmp/www/blob",
        f"httpd -f -p {HTTP_PORT} -h /tmp/www & l {HTTP_PORT:04X}",
        "r send",
        "r connect",
        "kill $!",
        "r done",
    ])


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Setup:
    """One peer's run: the guest's command and its network (the same for both peers, bar the host ports)."""

    command: list[str]
    network: Network


Peer = Callable[[GuestAssets, Setup], str]
"""Runs the guest command to its end; returns the guest's output. Raises if the guest failed."""


@contextlib.contextmanager
def host_side(plan: Plan) -> Iterator[tuple[int, int, Callable[[], HostResults]]]:
    """The host process for one run: (control port, sink port, a call that waits for its results)."""
    parent, child = multiprocessing.get_context("spawn").Pipe()
    process = multiprocessing.get_context("spawn").Process(target=drive, args=(plan, child), daemon=True)
    process.start()
    child.close()
    try:
        if not parent.poll(RESULT_TIMEOUT):
            raise RuntimeError("the host side did not start")
        control, sink = parent.recv()

        def results() -> HostResults:
            if not parent.poll(RESULT_TIMEOUT):
                raise RuntimeError("the host side did not finish: the guest stopped part-way")
            outcome = parent.recv()
            if isinstance(outcome, str):
                raise RuntimeError(f"the host side failed: {outcome}")
            assert isinstance(outcome, HostResults)
            return outcome

        yield control, sink, results
    finally:
        process.terminate()
        process.join()
        parent.close()


def run_asupermachine(assets: GuestAssets, setup: Setup) -> str:
    async def once() -> str:
        output: list[str] = []
        async with Machine.boot(command=setup.command, network=setup.network, memory_mib=MEMORY_MIB) as vm:
            with anyio.fail_after(GUEST_TIMEOUT):
                async for line in vm.console.lines():
                    output.append(line)
                ended = await vm.wait()
        if ended.exit_code != 0:
            raise RuntimeError(f"our guest ended {ended}:\n" + "\n".join(output[-40:]))
        return "\n".join(output)

    return anyio.run(once)


@contextlib.contextmanager
def qemu_passt(network: Network) -> Iterator[int]:
    """A passt for QEMU with the options ours gets, on a socket pair; yields QEMU's end (inheritable)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    argv = network.passt(network.guest()).argv(ours.fileno())
    if os.geteuid() == 0:  # as ours does (passt started as root would drop to nobody itself)
        argv = ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups", "--", *argv]
    passt = subprocess.Popen(argv, pass_fds=(ours.fileno(),), stdin=subprocess.DEVNULL, start_new_session=True)
    ours.close()
    try:
        os.set_inheritable(theirs.fileno(), True)
        yield theirs.fileno()
    finally:
        theirs.close()
        passt.send_signal(signal.SIGKILL)
        passt.wait()


def run_qemu(assets: GuestAssets, setup: Setup) -> str:
    with qemu_passt(setup.network) as fd:
        command = qemu_command(
            assets, vcpus=1, memory_mib=MEMORY_MIB, model=detect_cpu_model(), command=setup.command,
            nic=QemuNic(fd, setup.network.guest().init_option),
        )
        result = subprocess.run(command, pass_fds=(fd,), capture_output=True, timeout=GUEST_TIMEOUT)
    output = result.stdout.decode(errors="replace")
    if exit_status(result.returncode) != 0:
        raise RuntimeError(
            f"the QEMU guest ended with {result.returncode}:\n{output[-4000:]}\n{result.stderr.decode()[-2000:]}"
        )
    return output


def measure(peer: Peer, assets: GuestAssets, blocks: int, connections: int) -> HostResults:
    plan = Plan(blocks, connections, ingress_port=free_port(), http_port=free_port())
    network = Network(
        publish={plan.ingress_port: INGRESS_PORT, plan.http_port: HTTP_PORT},
        allow_host_loopback=True,
    )
    with host_side(plan) as (control, sink, results):
        script = guest_script(control, sink, blocks, network.guest().gateway)
        peer(assets, Setup(["sh", "-c", script], network))
        return results()


async def restores_to_exec(runs: int) -> dict[str, list[float]]:
    """Seconds from restore to the first exec's result, for the built-in image baked with and without a NIC."""
    image = await Image.builtin()
    snapshots: dict[str, Snapshot] = {
        "networked": await image.bake(),
        "network=False": await image.bake(network=False),
    }
    samples: dict[str, list[float]] = {name: [] for name in snapshots}
    for _ in range(runs):
        for name, snapshot in snapshots.items():  # interleaved, so drift hits both alike
            start = time.perf_counter()
            async with Machine.restore(snapshot) as vm:
                await vm.exec(["true"])
            samples[name].append(time.perf_counter() - start)
    return samples


def print_table(
    kib: int, connections: int, results: dict[str, list[HostResults]], restores: dict[str, list[float]]
) -> None:
    names, mib = list(results), kib / 1024
    rows: list[tuple[str, Callable[[HostResults], float]]] = [
        (f"TCP guest->host, egress to 10.0.2.2 ({kib} KiB), MiB/s", lambda r: mib / r.egress),
        (f"TCP host->guest, published port ({kib} KiB), MiB/s", lambda r: mib / r.ingress),
        (f"TCP guest->host, published port ({kib} KiB), MiB/s", lambda r: mib / r.send),
        (f"TCP connections/s, published port ({connections} HTTP GETs)", lambda r: connections / r.connections),
    ]
    runs = len(next(iter(results.values())))
    width = 58
    print(measured_under())
    print(f"\nvirtio-net over passt, 1 vCPU, {MEMORY_MIB} MiB, MTU 32744, median of {runs} run(s), host clock")
    print(f"{'metric':<{width}}" + "".join(f"{name:>18}" for name in names))
    for label, value in rows:
        cells = [statistics.median(value(r) for r in results[name]) for name in names]
        print(f"{label:<{width}}" + "".join(f"{cell:18.2f}" for cell in cells))
    for name, samples in restores.items():
        label = f"restore -> first exec, {name} snapshot, s (median of {len(samples)})"
        print(f"{label:<{width}}{statistics.median(samples):18.2f}" + "".join(f"{'-':>18}" for _ in names[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kib", type=int, default=1024, help="KiB moved in each throughput phase (x 64)")
    parser.add_argument("--connections", type=int, default=20, help="sequential HTTP connections")
    parser.add_argument("--runs", type=int, default=1, help="runs per peer, interleaved")
    parser.add_argument("--restores", type=int, default=3, help="restores of each snapshot")
    parser.add_argument("--quick", action="store_true", help="256 KiB, 5 connections, 1 restore each")
    args = parser.parse_args()
    if args.quick:
        args.kib, args.connections, args.restores = 256, 5, 1
    assets = resolve_assets(default_root=True)
    peers: dict[str, Peer] = {"asupermachine": run_asupermachine}
    if shutil.which("qemu-system-x86_64") and shutil.which("passt"):
        peers["qemu -M microvm"] = run_qemu
    results: dict[str, list[HostResults]] = {name: [] for name in peers}
    for _ in range(args.runs):
        for name, peer in peers.items():  # one VM at a time, interleaved
            print(f"{name}: booting, then the guest script", file=sys.stderr, flush=True)
            results[name].append(measure(peer, assets, (args.kib << 10) // CHUNK, args.connections))
    print("asupermachine: baking (cached) and restoring the built-in image", file=sys.stderr, flush=True)
    restores = anyio.run(restores_to_exec, args.restores)
    print_table(args.kib, args.connections, results, restores)


if __name__ == "__main__":
    main()
