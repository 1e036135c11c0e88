"""How a VM is made: what booting it takes, and what a snapshot of it must reproduce."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .arch.x86_64.cpuid import CpuModel
from .virtio.blk import Disk


@dataclass(frozen=True)
class ExecDefaults:
    """What :meth:`Machine.exec` starts from when the call does not say."""

    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str = ""
    user: str = ""


@dataclass(frozen=True)
class VmRecipe:
    kernel: Path
    initramfs: Path
    disks: tuple[Disk, ...]
    """In slot order: the root first."""
    cmdline: str
    vcpus: int
    memory_mib: int
    cpu_model: CpuModel
    exec_defaults: ExecDefaults
