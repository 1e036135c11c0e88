"""What differs between the architectures an L1 can be: QEMU, its machine, Debian's kernel, KVM's modules."""

from __future__ import annotations

import dataclasses
import functools
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class L1Arch:
    """One architecture of L1 VM, as QEMU emulates it and Debian packages its kernel."""

    name: str
    debian: str
    """Debian's name of the architecture (``dpkg --print-architecture``)."""
    qemu: str
    """The QEMU system emulator's executable."""
    qemu_package: str
    """Debian's package that has it."""
    machine: tuple[str, ...]
    """QEMU's machine, CPU and accelerator arguments: a CPU that can host KVM."""
    kernel_package: str
    """Debian's meta-package naming the current kernel image package (``apt-cache depends``)."""
    kernel_image: str
    """Where the kernel image lies in that package, ``{version}`` standing for its ABI version."""
    kvm_modules: tuple[str, ...]
    """The modules that make ``/dev/kvm`` (their dependencies are loaded first)."""
    console: str
    """The kernel's console device."""
    no_kvm_hint: str
    """What to say when the L1 comes up without ``/dev/kvm``."""


# Modules every L1 loads besides KVM's (all modules in Debian's amd64 and arm64 kernels): its root over 9p
# under an overlay, and a NIC for passt.
COMMON_MODULES = ("9pnet_virtio", "9p", "overlay", "virtio_net", "virtio_pci")

X86_64 = L1Arch(
    name="x86_64",
    debian="amd64",
    qemu="qemu-system-x86_64",
    qemu_package="qemu-system-x86",
    # TCG emulates AMD SVM with nested paging under -cpu max; multi-threaded TCG uses a host thread per vCPU.
    machine=("-machine", "q35", "-accel", "tcg,thread=multi", "-cpu", "max"),
    kernel_package="linux-image-amd64",
    kernel_image="boot/vmlinuz-{version}",
    kvm_modules=("kvm_amd",),
    console="ttyS0",
    no_kvm_hint=(
        "kvm_amd did not load: this QEMU's -cpu max lacks SVM (QEMU's TCG emulates AMD SVM with nested paging; "
        "kvm_intel cannot be had this way, as TCG does not emulate VMX)"
    ),
)

def _arm64_machine(gic_version: int) -> tuple[str, ...]:
    machine = f"virt,virtualization=on,gic-version={gic_version}"
    return ("-machine", machine, "-accel", "tcg,thread=multi", "-cpu", "max")


# QEMU's TCG emulates an arm64 CPU with EL2, VHE and a GICv3: Debian's kernel brings up KVM (built in) on it.
ARM64 = L1Arch(
    name="arm64",
    debian="arm64",
    qemu="qemu-system-aarch64",
    qemu_package="qemu-system-arm",
    machine=_arm64_machine(3),
    kernel_package="linux-image-arm64:arm64",
    kernel_image="boot/vmlinuz-{version}",
    kvm_modules=(),
    console="ttyAMA0",
    no_kvm_hint="KVM did not come up: this QEMU's -cpu max lacks EL2 (virtualization=on)",
)

# An L1 of this host's architecture runs in this host's root; one of another (arm64 on an x86_64 host)
# in a Debian root of its own, prepared once (see .userland).
ARCHES = {arch.name: arch for arch in (X86_64, ARM64)}


GIC_VERSIONS = (2, 3)


def with_gic(arch: L1Arch, version: int) -> L1Arch:
    """The arm64 L1 ``arch`` with a GIC of ``version`` (2 or 3, with its virtualization extensions): its KVM
    then gives guests a vGIC of that version, as an arm64 host with that GIC does."""
    if arch.name != ARM64.name or version not in GIC_VERSIONS:
        raise ValueError(f"an L1 with a GICv{version} is an arm64 one, with a GICv2 or v3")
    return dataclasses.replace(arch, machine=_arm64_machine(version))


def is_native(arch: L1Arch) -> bool:
    """Whether this host's binaries run in an L1 of ``arch``: then the L1 uses this host's root."""
    return arch.debian == debian_architecture()


@functools.cache
def debian_architecture() -> str:
    """This host's architecture, in Debian's words."""
    return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout.strip()
