"""QEMU ``-M microvm`` as the peer: the same kernel, initramfs, root disk, init configuration and CPU model as ours."""

from __future__ import annotations

import json
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from asupermachine._cache import build_once, cache_root, content_key
from asupermachine._core.arch.x86_64.cmdline import kernel_cmdline
from asupermachine._core.arch.x86_64.cpuid import EMULATOR_REFUSED_FEATURES, CpuModel
from asupermachine._core.builder import ROOT_DEVICE
from asupermachine._core.init_config import InitConfig, initrd_with
from asupermachine.guest import GuestAssets

# QEMU's names for the KVM PV features our conservative model masks (cpuid.KVM_HYPERCALL_FEATURES).
QEMU_KVM_HYPERCALL_FLAGS = ("kvm-pv-unhalt", "kvm-pv-ipi", "kvm-pv-sched-yield")
# kvm_pvm refuses QEMU's write of MSR_IA32_ARCH_CAPABILITIES (0x10a) that `-cpu host` implies.
QEMU_REFUSED_MSR_FEATURES = ("arch-capabilities",)
# QEMU's microvm (hw/i386/microvm.c): 8 virtio-mmio transports of 512 bytes from
# 0xfeb00000, transport i on IRQ 5 + i, handed to devices from the top down.
QEMU_VIRTIO_MMIO_BASE, QEMU_VIRTIO_MMIO_SIZE, QEMU_VIRTIO_TRANSPORTS, QEMU_VIRTIO_IRQ_BASE = 0xFEB00000, 512, 8, 5


def _transport(index: int) -> str:
    """The kernel's word declaring the transport of the ``index``-th device on QEMU's command line."""
    slot = QEMU_VIRTIO_TRANSPORTS - 1 - index
    base = QEMU_VIRTIO_MMIO_BASE + slot * QEMU_VIRTIO_MMIO_SIZE
    return f"virtio_mmio.device={QEMU_VIRTIO_MMIO_SIZE}@{base:#x}:{QEMU_VIRTIO_IRQ_BASE + slot}"


@dataclass(frozen=True)
class QemuNic:
    """A virtio-net NIC whose frames go over ``fd``, a connected stream socket QEMU inherits (4-byte
    big-endian length framing, as passt speaks), with ``init_option`` (init's ``net=``)."""

    fd: int
    init_option: str


def exit_status(qemu_returncode: int) -> int:
    """Our kernel reports init's exit status on port 0xf4: QEMU exits with (status << 1) | 1."""
    return qemu_returncode >> 1


def _initrd(assets: GuestAssets, config: InitConfig) -> Path:
    """Our initramfs with ``config`` appended, as our VMM loads it, in a file for ``-initrd`` (cached by content)."""
    data = initrd_with(assets.initramfs.read_bytes(), config)
    target = cache_root() / "bench" / "qemu-initrd" / content_key(data) / "initrd.cpio"

    def write(staging: Path) -> None:
        (staging / target.name).write_bytes(data)

    return build_once(target, write)


def qemu_command(
    assets: GuestAssets,
    *,
    vcpus: int,
    memory_mib: int,
    model: CpuModel,
    command: Sequence[str],
    disks: Sequence[Path] = (),
    nic: QemuNic | None = None,
) -> list[str]:
    """QEMU booting our guest with its root disk, then ``disks`` read-only, then ``nic``, running ``command``.

    The virtio-mmio transports are declared by us, in device order, so the guest
    names the disks as ours does (root ``/dev/vda``, ...).
    The caller passes ``nic.fd`` on to QEMU (``pass_fds``).
    """
    if assets.default_root is None:
        raise ValueError("QEMU needs the default root disk: resolve_assets(default_root=True)")
    cpu = "host"
    if model is CpuModel.CONSERVATIVE:
        cpu += "".join(f",-{name}" for name in QEMU_REFUSED_MSR_FEATURES)
        cpu += "".join(f",-{feature.name}" for feature in EMULATOR_REFUSED_FEATURES)
        cpu += "".join(f",{flag}=off" for flag in QEMU_KVM_HYPERCALL_FLAGS)
    drives: list[str] = []
    for index, disk in enumerate([assets.default_root, *disks]):
        drives += ["-drive", f"id=disk{index},file={disk},format=raw,if=none,readonly=on"]
        drives += ["-device", f"virtio-blk-device,drive=disk{index}"]
    nics: list[str] = []
    if nic is not None:
        nics += ["-netdev", f"stream,id=net0,server=off,addr.type=fd,addr.str={nic.fd}"]
        nics += ["-device", "virtio-net-device,netdev=net0"]
    cmdline = kernel_cmdline(
        cpu_model=model,
        kernel_log=False,
        devices=[_transport(index) for index in range(1 + 1 + len(disks) + (nic is not None))],  # rng, root, disks, nic
    )
    config = InitConfig(root=ROOT_DEVICE, network="" if nic is None else nic.init_option, command=command)
    initrd = _initrd(assets, config)
    return [
        "qemu-system-x86_64", "-M", "microvm,isa-serial=on,acpi=off,rtc=off,auto-kernel-cmdline=off", "-enable-kvm",
        "-cpu", cpu, "-smp", str(vcpus), "-m", str(memory_mib),
        "-kernel", str(assets.kernel), "-initrd", str(initrd), "-append", cmdline,
        "-nodefaults", "-no-user-config", "-nographic", "-serial", "stdio", "-no-reboot",
        "-device", "isa-debug-exit,iobase=0xf4,iosize=2",
        # The guest's entropy source, as ours has. (Our virtio-vsock has no peer here: QEMU
        # needs /dev/vhost-vsock, which these machines lack.)
        "-device", "virtio-rng-device",
        *drives,
        *nics,
    ]


def qmp_kvm_stats(socket_path: Path, timeout: float = 30.0) -> dict[str, int]:
    """KVM's counters of a running QEMU (QMP ``query-stats``, VM and vCPUs added up): the ones
    :meth:`Machine.kvm_stats` reports, for a side-by-side count."""
    totals: dict[str, int] = {}
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        sock.connect(str(socket_path))
        replies = sock.makefile("rb")
        _qmp_reply(replies)  # the greeting
        for command in ({"execute": "qmp_capabilities"},
                        {"execute": "query-stats", "arguments": {"target": "vm"}},
                        {"execute": "query-stats", "arguments": {"target": "vcpu"}}):
            sock.sendall(json.dumps(command).encode() + b"\n")
            reply = _qmp_reply(replies)
            for provider in reply.get("return") or []:
                for stat in provider["stats"]:
                    if isinstance(stat["value"], int):
                        totals[stat["name"]] = totals.get(stat["name"], 0) + stat["value"]
    return totals


def _qmp_reply(replies: BinaryIO) -> dict[str, Any]:
    """The next QMP message that is not an asynchronous event."""
    while True:
        message: dict[str, Any] = json.loads(replies.readline())
        if "error" in message:
            raise RuntimeError(f"QMP: {message['error']}")
        if "event" not in message:
            return message
