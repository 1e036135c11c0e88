"""Run in the arm64 L1 by tests/nested/test_kvm_arm64.py: our VMM on arm64 KVM boots, execs, snapshots, restores.

``python tests/nested/arm64_guest.py DIR``, DIR holding the arm64 ``Image``,
``initramfs.cpio`` and a busybox ``root.erofs``; prints one line per step.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import anyio

from asupermachine import Disk, Machine


async def main(assets: Path) -> None:
    kernel, initramfs, root = assets / "Image", assets / "initramfs.cpio", Disk(assets / "root.erofs")
    started = time.monotonic()
    command = ["sh", "-c", "echo main command on $(uname -m); exit 7"]
    async with Machine.boot(kernel, initramfs=initramfs, root=root, command=command) as vm:
        ended = await vm.wait()
        said = [line async for line in vm.console.lines() if "main command" in line]
    print(f"command: {ended.reason.value} {ended.exit_code} {said} {time.monotonic() - started:.1f} s", flush=True)
    started = time.monotonic()
    async with Machine.boot(kernel, initramfs=initramfs, root=root, vcpus=2) as vm:
        result = await vm.exec(["sh", "-c", "uname -m; grep -c ^processor /proc/cpuinfo; echo kept > /tmp/kept"])
        words = result.stdout.decode().split()
        print(f"exec: {result.exit_code} {words} {time.monotonic() - started:.1f} s", flush=True)
        with tempfile.TemporaryDirectory() as scratch:
            snapshot = await vm.snapshot(Path(scratch) / "snapshot")
            for clone in range(2):
                started = time.monotonic()
                async with Machine.restore(snapshot) as restored:
                    again = await restored.exec(["cat", "/tmp/kept"])
                words = again.stdout.decode().split()
                print(f"restore {clone}: {words} {time.monotonic() - started:.1f} s", flush=True)


anyio.run(main, Path(sys.argv[1]))
