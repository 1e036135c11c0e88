"""The architectures the guest assets are built for, and the host's own, which is the default."""

from __future__ import annotations

import os
from dataclasses import dataclass

from .._errors import AssetError


@dataclass(frozen=True)
class GuestArch:
    """One guest architecture, as Linux's build, Debian's cross toolchains and ``uname -m`` name it."""

    name: str
    """Linux's ``ARCH`` and Debian's architecture: ``x86_64``, ``arm64``."""
    machine: str
    """``uname -m`` on such a CPU."""
    gnu_triplet: str
    """Debian's triplet: its cross compilers are ``{triplet}-gcc``, its musl under ``/usr/lib/{triplet}``."""
    kernel_target: str
    """What ``make`` builds for the VMM's loader."""
    kernel_output: str
    """Where that lands in the tree, and the cached file's name."""

    @property
    def native(self) -> bool:
        return os.uname().machine == self.machine

    @property
    def cross_compile(self) -> str:
        """The ``CROSS_COMPILE`` prefix: empty on a host of this architecture."""
        return "" if self.native else f"{self.gnu_triplet}-"


X86_64 = GuestArch("x86_64", "x86_64", "x86_64-linux-gnu", "vmlinux", "vmlinux")
ARM64 = GuestArch("arm64", "aarch64", "aarch64-linux-gnu", "Image", "arch/arm64/boot/Image")
GUEST_ARCHES = {arch.name: arch for arch in (X86_64, ARM64)}


def host_arch() -> GuestArch:
    """The architecture this host runs, which its KVM runs guests of."""
    machine = os.uname().machine
    for arch in GUEST_ARCHES.values():
        if arch.machine == machine:
            return arch
    raise AssetError(f"no guest assets for this host's architecture {machine!r} (only {', '.join(GUEST_ARCHES)})")


def guest_arch(name: str) -> GuestArch:
    """The architecture called ``name`` (``x86_64`` or ``arm64``); :class:`AssetError` for another."""
    try:
        return GUEST_ARCHES[name]
    except KeyError:
        raise AssetError(f"no guest architecture {name!r} (only {', '.join(GUEST_ARCHES)})") from None
