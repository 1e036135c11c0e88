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
class GuestNetwork:
    """The guest's side of its network, set up by init at boot (so a snapshot keeps it): one NIC, eth0."""

    address: str = "10.0.2.15/24"
    """IPv4 address and prefix length."""
    gateway: str = "10.0.2.2"
    """The default route; also the host, as ``host.internal``."""
    mtu: int = 1500
    dns: str = ""
    """The resolver ``/etc/resolv.conf`` names; empty: leave the image's."""
    mac: str = "52:54:00:12:34:56"

    @property
    def mac_bytes(self) -> bytes:
        return bytes.fromhex(self.mac.replace(":", ""))

    @property
    def ip(self) -> str:
        """The address without its prefix length."""
        return self.address.partition("/")[0]

    @property
    def init_option(self) -> str:
        """init's ``asupermachine.net=`` value: ``ADDRESS/PREFIX,GATEWAY,MTU[,DNS]``."""
        return ",".join([self.address, self.gateway, str(self.mtu), *([self.dns] if self.dns else [])])


@dataclass(frozen=True)
class GuestMount:
    """A filesystem init mounts in the root before the command runs (a volume)."""

    device: str
    """The guest's block device, ``/dev/vdb``..."""
    target: str
    """An absolute path in the guest's root; made if missing."""
    fs: str = "ext4"
    read_only: bool = False

    @property
    def init_option(self) -> str:
        """init's ``mount=`` value: ``DEVICE,FS,ro|rw,TARGET`` (the target last: it may hold commas)."""
        return ",".join([self.device, self.fs, "ro" if self.read_only else "rw", self.target])


@dataclass(frozen=True)
class VmRecipe:
    """One VM, described: files, shape, devices and what init runs. Plain values only."""

    kernel: Path
    initramfs: Path
    disks: tuple[Disk, ...]
    """In slot order: the root first (``/dev/vda``), then ``/dev/vdb``, ..."""
    cpu_model: CpuModel
    spare_drives: int = 0
    """Empty drives after ``disks``, for volumes mounted while the VM runs; one filled becomes the next disk."""
    vcpus: int = 1
    memory_mib: int = 256
    command: tuple[str, ...] = ()
    """init's main process; empty: the VM serves execs until it is closed."""
    defaults: ProcessDefaults = ProcessDefaults()
    hostname: str = ""
    network: GuestNetwork | None = None
    """A NIC and how the guest configures it; None: no NIC."""
    mounts: tuple[GuestMount, ...] = ()
    """Filesystems on ``disks`` that init mounts at boot (a restore finds them mounted)."""
    changes_device: str = ""
    """The disk (one of ``disks``) init keeps the root's changes on, e.g. ``/dev/vdc``; empty: memory.
    Like ``mounts``, for the boot only."""
    kernel_log: bool = False
    cmdline_extra: str = ""
