"""Run in the arm64 L1 by tests/nested/test_kvm_arm64.py: our VMM on arm64 KVM boots, execs over vsock, serves
and fetches over its NIC, writes a volume, snapshots when idle, restores with its clock moved on, pauses and
resumes.

``python tests/nested/arm64_guest.py DIR``, DIR holding the arm64 ``Image``,
``initramfs.cpio`` and a busybox ``root.erofs``; prints one line per step.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import anyio
import httpx
from anyio.abc import SocketAttribute, SocketStream

from asupermachine import Disk, Machine, Network, Runtime, Volume

HOST_PORT, GUEST_PORT = 8080, 8081
SNAPSHOT_AGE = 5.0
"""Seconds between a snapshot and its restores: a restored clock that stood still would be that far behind."""
BOOT_CLOCK_ERROR = 0.5
"""Seconds the guest's clock may be off from its boot: Linux sets it from the RTC's whole second plus half a
second (``rtc_hctosys``). ``date +%s`` then drops the fraction, so the guest may read up to 1.5 s behind."""


async def main(assets: Path, scratch: Path) -> None:
    kernel, initramfs, root = assets / "Image", assets / "initramfs.cpio", Disk(assets / "root.erofs")
    started = time.monotonic()
    command = ["sh", "-c", "echo main command on $(uname -m); exit 7"]
    async with Machine.boot(kernel, initramfs=initramfs, root=root, command=command) as vm:
        ended = await vm.wait()
        said = [line async for line in vm.console.lines() if "main command" in line]
    print(f"command: {ended.reason.value} {ended.exit_code} {said} {time.monotonic() - started:.1f} s", flush=True)

    volume = await Volume.create(scratch / "data.ext4", size_mib=32)
    network = Network(publish={HOST_PORT: GUEST_PORT}, allow_host_loopback=True)
    async with Runtime() as rt:
        started = time.monotonic()
        vm = await rt.boot(
            kernel, initramfs=initramfs, root=root, vcpus=2, network=network, volumes={"/data": volume}
        )
        result = await vm.exec(["sh", "-c", "uname -m; grep -c ^processor /proc/cpuinfo; grep -o -m1 -E 'GICv3|GIC-0' "
                                            "/proc/interrupts; echo kept | tee /tmp/kept /data/kept"])
        words = result.stdout.decode().split()
        print(f"exec: {result.exit_code} {words} {time.monotonic() - started:.1f} s", flush=True)

        served = await vm.exec(["sh", "-c", f"mkdir -p /www && echo from-guest > /www/index.html && "
                                            f"httpd -p {GUEST_PORT} -h /www"])
        async with httpx.AsyncClient(timeout=60, trust_env=False) as client:  # the host's CA file is not here
            page = (await client.get(f"http://127.0.0.1:{HOST_PORT}/index.html")).text.strip()
        async with await anyio.create_tcp_listener(local_host="127.0.0.1") as host_listener:
            async with anyio.create_task_group() as host_side:
                host_side.start_soon(host_listener.serve, answer_once)
                host_port = host_listener.extra(SocketAttribute.local_port)
                fetched = await vm.exec(["wget", "-q", "-O-", f"http://host.internal:{host_port}/"])
                host_side.cancel_scope.cancel()
        print(f"network: {served.exit_code} {page} {fetched.stdout.decode().strip()}", flush=True)

        started = time.monotonic()
        snapshot = await vm.snapshot(scratch / "snapshot", idle_within=10)
        waited = vm.kvm_stats().get("halt_wait_ns", 0) / 1e9
        print(f"snapshot when idle: {time.monotonic() - started:.1f} s (vCPUs waited {waited:.0f} s)", flush=True)
        await anyio.sleep(SNAPSHOT_AGE)
        for clone in range(2):
            started = time.monotonic()
            async with await rt.restore(snapshot, network=Network()) as restored:  # the original has the port
                before = time.time()
                again = await restored.exec(["sh", "-c", "cat /tmp/kept; date +%s"])
                after = time.time()
            kept, guest_time = again.stdout.decode().split()
            right = before - BOOT_CLOCK_ERROR - 1 <= int(guest_time) <= after + BOOT_CLOCK_ERROR
            print(f"restore {clone}: ['{kept}'] clock {'right' if right else 'wrong'} "
                  f"({int(guest_time) - before:+.1f} s) {time.monotonic() - started:.1f} s", flush=True)

        started = time.monotonic()
        paused = await vm.pause(idle_within=10)
        resumed = await rt.resume(paused.id)
        again = await resumed.exec(["cat", "/tmp/kept", "/data/kept"])
        print(f"pause and resume: {again.stdout.decode().split()} {time.monotonic() - started:.1f} s", flush=True)
        await resumed.close()


async def answer_once(stream: SocketStream) -> None:
    async with stream:
        await stream.receive()
        await stream.send(b"HTTP/1.0 200 OK\r\nContent-Length: 10\r\n\r\nfrom-host\n")


with tempfile.TemporaryDirectory() as scratch_dir:
    anyio.run(main, Path(sys.argv[1]), Path(scratch_dir))
