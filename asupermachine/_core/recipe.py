"""What makes one VM: the description the builder assembles for a boot, and a snapshot keeps for a restore."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .arch.x86_64.cpuid import CpuModel
from .virtio.blk import Disk


@dataclass(frozen=True)
class ProcessDefaults:
    """What the VM's main command and every exec start from unless told otherwise (an image's config)."""

    env: Mapping[str, str] = field(default_factory=dict)
    workdir: str = ""
    user: str = ""


@dataclass(frozen=True)
class VmRecipe:
    """One VM, described: files, shape, devices and what init runs. Plain values only."""

    kernel: Path
    initramfs: Path
    disks: tuple[Disk, ...]
    """In slot order: the root first (``/dev/vda``), then ``/dev/vdb``, ..."""
    cpu_model: CpuModel
    vcpus: int = 1
    memory_mib: int = 256
    command: tuple[str, ...] = ()
    """init's main process; empty: the VM serves execs until it is closed."""
    defaults: ProcessDefaults = ProcessDefaults()
    hostname: str = ""
    kernel_log: bool = False
    cmdline_extra: str = ""
