"""The QEMU command line of an L1: Debian's kernel and our initramfs, its root over 9p, a NIC."""

from __future__ import annotations

from pathlib import Path

from .arch import L1Arch
from .kernel import L1Kernel
from .root import L1Root

CONSOLE_NAME = "console.log"
"""The L1 kernel's console, written into the run's directory."""
MONITOR_NAME = "monitor.sock"
"""QEMU's human monitor, in the run's directory: to look into an L1 that stopped answering
(``socat - UNIX-CONNECT:.../monitor.sock``, then ``info cpus``, ``info registers -a``)."""


def kernel_cmdline(arch: L1Arch) -> str:
    # panic=-1 with -no-reboot: a dying L1 ends QEMU instead of hanging. The L1 is a test bench,
    # not a place to defend: mitigations only slow its emulated kernel.
    return f"console={arch.console} panic=-1 mitigations=off"


def qemu_command(
    arch: L1Arch, kernel: L1Kernel, initramfs: Path, io: Path, root: L1Root, *, memory_mib: int, vcpus: int
) -> list[str]:
    """The argv that boots the L1 with ``root`` shared as ``hostroot``, its repository (if any) read-only as
    ``repository``, and ``io`` (the run's directory) writable as ``nestedio``."""
    repository = () if root.repository is None else _share("repository", root.repository, writable=False)
    return [
        arch.qemu, *arch.machine,
        "-m", str(memory_mib), "-smp", str(vcpus),
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-monitor", f"unix:{io / MONITOR_NAME},server=on,wait=off",
        "-kernel", str(kernel.image), "-initrd", str(initramfs), "-append", kernel_cmdline(arch),
        "-serial", f"file:{io / CONSOLE_NAME}",
        *_share("hostroot", root.path, writable=False), *repository,
        *_share("nestedio", io, writable=True),
        # QEMU's user network: a routed interface, which passt needs, and a DNS forwarder (10.0.2.3),
        # so the L1 reaches and resolves what this host does (restrict=on would cut DNS too).
        "-nic", "user,model=virtio-net-pci",
    ]


def _share(tag: str, path: Path, *, writable: bool) -> tuple[str, str]:
    share = f"local,path={path},mount_tag={tag},security_model=none,multidevs=remap"
    return "-virtfs", share if writable else f"{share},readonly=on"
