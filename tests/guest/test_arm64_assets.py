"""The arm64 guest assets, cross-built on request, boot under QEMU's ``-M virt`` with QEMU's own device tree.

An independent board: QEMU writes the device tree (GICv3, PL011, its virtio-mmio
transports, PSCI), so this proves the kernel's configuration and the static init
without our loader or DTB writer. The first run builds the arm64 kernel (minutes,
cached by content like the x86_64 one).
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest

from asupermachine._core.arch.aarch64.image import arm64_kernel
from asupermachine._core.init_config import InitConfig, initrd_with
from asupermachine.guest import READY_MARKER
from asupermachine.guest.arch import ARM64
from asupermachine.guest.initramfs import ensure_initramfs
from asupermachine.guest.kernel import ensure_kernel

QEMU = "qemu-system-aarch64"
BOOT_DEADLINE = 300  # seconds: a TCG-emulated arm64 boot takes seconds, on a loaded 2-core CI machine more


@pytest.fixture(scope="module")
def arm64_assets() -> tuple[Path, Path]:
    return ensure_kernel(ARM64), ensure_initramfs(ARM64)


def test_the_arm64_kernel_is_an_image_our_loader_reads(arm64_assets: tuple[Path, Path]) -> None:
    kernel = arm64_kernel(arm64_assets[0].read_bytes())
    assert kernel.page_size == 4096 and kernel.anywhere


def test_init_and_agent_are_static_arm64_executables(arm64_assets: tuple[Path, Path], tmp_path: Path) -> None:
    subprocess.run(["cpio", "-id", "--quiet", "init", "agent"], input=arm64_assets[1].read_bytes(), cwd=tmp_path,
                   check=True)
    for name in ("init", "agent"):
        described = subprocess.run(["file", "-b", str(tmp_path / name)], capture_output=True, text=True).stdout
        assert "ARM aarch64" in described and "statically linked" in described, described


def test_the_assets_boot_to_inits_ready_line_on_qemus_virt_board(
    arm64_assets: tuple[Path, Path], tmp_path: Path
) -> None:
    kernel, initramfs = arm64_assets
    initrd = tmp_path / "initrd"
    initrd.write_bytes(initrd_with(initramfs.read_bytes(), InitConfig(hostname="arm64-guest")))
    command = [
        QEMU, "-machine", "virt,gic-version=3", "-cpu", "max", "-accel", "tcg", "-smp", "2", "-m", "256",
        "-nographic", "-no-reboot", "-kernel", str(kernel), "-initrd", str(initrd),
        "-append", "console=ttyAMA0 panic=-1",
    ]  # fmt: skip
    console: list[str] = []
    with subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
                          errors="replace") as qemu:
        deadline = threading.Timer(BOOT_DEADLINE, qemu.kill)  # a hung boot ends the loop below
        deadline.start()
        try:
            assert qemu.stdout is not None
            for line in qemu.stdout:
                console.append(line)
                if READY_MARKER in line:
                    break
        finally:
            deadline.cancel()
            qemu.kill()
    log = "".join(console)
    assert READY_MARKER in log, log[-3000:]
    assert "Booting Linux on physical CPU" in log and "GICv3" in log
    assert "smp: Brought up 1 node, 2 CPUs" in log
