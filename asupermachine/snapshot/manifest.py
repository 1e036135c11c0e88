"""``snapshot.json``: the versioned, checksummed description of a snapshot, and its codec.

Everything a restore needs besides the memory file is here: the assets and disks
it was taken with (by content hash), the VM's shape, and the saved CPU and device
state. KVM's state blobs are base64; all else is plain JSON. What init ran and the
image's environment are not here: they live in guest memory (the memory file), where
every process's environment does, and the agent applies them to each exec.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .._core.arch.x86_64.cpuid import CpuModel
from .._core.devices.uart import UartState
from .._core.kvm.host import KvmHost
from .._core.kvm.state import StateKind
from .._core.persist import MachineState, VcpuState
from .._core.recipe import GuestNetwork, VmRecipe
from .._core.virtio.blk import Disk
from .._core.virtio.mmio import TransportState
from .._errors import SnapshotError
from .memory_file import MemoryImage

FORMAT_VERSION = 10
"""10: arm64's state (each vCPU's registers by ONE_REG id, the vGIC's registers); 9: empty drives for
volumes (``spare_drives``); 8: a disk may be kept in place, writable (a paused machine's); 7: disks are
objects, and a writable disk is frozen into the snapshot; 6: all disks are read-only paths. All five read."""
READABLE_VERSIONS = (6, 7, 8, 9, FORMAT_VERSION)
FORMAT_NAME = "asupermachine-snapshot"
MAX_DRIVES = 256
"""More than any architecture has virtio slots for: a larger count is damage."""


@dataclass(frozen=True)
class Manifest:
    recipe: VmRecipe
    """How the VM was made; its files by absolute path, but for the frozen copies of its writable disks:
    those are copy-on-write and their paths relative to the snapshot's directory. A paused machine's
    writable disks are kept in place instead (writable, not copy-on-write)."""
    sha256: Mapping[str, str]
    """The content hash of every file the recipe names (kernel, initramfs, disks) but kept disks, by path."""
    memory: MemoryImage
    state: MachineState
    host: KvmHost
    """The KVM flavour and CPU the VM ran on: its saved state fits only a host like that."""


def encode(manifest: Manifest) -> bytes:
    recipe = manifest.recipe
    body = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "recipe": {
            "kernel": str(recipe.kernel),
            "initramfs": str(recipe.initramfs),
            "disks": [
                {"path": str(disk.path), "read_only": disk.read_only, "copy_on_write": disk.copy_on_write}
                for disk in recipe.disks
            ],
            "spare_drives": recipe.spare_drives,
            "cpu_model": recipe.cpu_model.value,
            "vcpus": recipe.vcpus,
            "memory_mib": recipe.memory_mib,
            "hostname": recipe.hostname,
            "network": None if recipe.network is None else asdict(recipe.network),
            "kernel_log": recipe.kernel_log,
            "cmdline_extra": recipe.cmdline_extra,
        },
        "sha256": dict(manifest.sha256),
        "host": asdict(manifest.host),
        "memory": asdict(manifest.memory),
        "state": _encode_state(manifest.state),
    }
    body["checksum"] = _checksum(body)
    return json.dumps(body, indent=1, sort_keys=True).encode()


def decode(data: bytes, where: Path) -> Manifest:
    """Parse and check a manifest; raises :class:`SnapshotError` naming the failed check."""
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SnapshotError("manifest", f"{where} is not valid JSON: {e}") from None
    if not isinstance(body, dict) or body.get("format") != FORMAT_NAME:
        raise SnapshotError("manifest", f"{where} is not an asupermachine snapshot manifest")
    if body.get("version") not in READABLE_VERSIONS:
        raise SnapshotError(
            "version", f"{where} has format version {body.get('version')!r}; this build reads {READABLE_VERSIONS}"
        )
    if body.get("checksum") != _checksum(body):
        raise SnapshotError("checksum", f"{where} does not match its checksum (damaged or edited)")
    try:
        recipe = _decode_recipe(body["recipe"])
        sha256 = {str(path): str(digest) for path, digest in body["sha256"].items()}
        hashed = {recipe.kernel, recipe.initramfs, *(disk.path for disk in recipe.disks if not is_kept(disk))}
        unhashed = hashed - set(map(Path, sha256))
        if unhashed:
            raise ValueError(f"no sha256 for {sorted(map(str, unhashed))}")
        return Manifest(
            recipe=recipe,
            sha256=sha256,
            memory=MemoryImage(
                size=int(body["memory"]["size"]),
                extents=tuple((int(offset), int(length)) for offset, length in body["memory"]["extents"]),
                blake2b=str(body["memory"]["blake2b"]),
            ),
            state=_decode_state(body["state"]),
            host=KvmHost(flavour=str(body["host"]["flavour"]), cpu=str(body["host"]["cpu"])),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise SnapshotError("manifest", f"{where} is malformed: {e!r}") from None


def _decode_recipe(body: dict[str, Any]) -> VmRecipe:
    return VmRecipe(
        kernel=Path(body["kernel"]),
        initramfs=Path(body["initramfs"]),
        disks=tuple(map(_decode_disk, body["disks"])),
        spare_drives=_count(body.get("spare_drives", 0)),  # before version 9: none
        cpu_model=CpuModel(body["cpu_model"]),
        vcpus=int(body["vcpus"]),
        memory_mib=int(body["memory_mib"]),
        hostname=str(body["hostname"]),
        network=_decode_network(body["network"]),
        kernel_log=bool(body["kernel_log"]),
        cmdline_extra=str(body["cmdline_extra"]),
    )


def _count(value: object) -> int:
    if not isinstance(value, int) or not 0 <= value <= MAX_DRIVES:
        raise ValueError(f"{value!r} is not a count of drives")
    return value


def is_kept(disk: Disk) -> bool:
    """Whether a snapshot's disk is kept in place (a paused machine's writable disk), not frozen or hashed."""
    return not (disk.read_only or disk.copy_on_write)


def _decode_disk(body: str | dict[str, Any]) -> Disk:
    if isinstance(body, str):  # version 6
        return Disk(Path(body))
    copy_on_write = bool(body["copy_on_write"])
    read_only = bool(body.get("read_only", not copy_on_write))  # version 7: no disk was kept
    return Disk(Path(body["path"]), read_only=read_only, copy_on_write=copy_on_write)


def _decode_network(body: dict[str, Any] | None) -> GuestNetwork | None:
    if body is None:
        return None
    return GuestNetwork(
        address=str(body["address"]), gateway=str(body["gateway"]), mtu=int(body["mtu"]), dns=str(body["dns"]),
        mac=str(body["mac"]),
    )


def _checksum(body: dict[str, Any]) -> str:
    content = {key: value for key, value in body.items() if key != "checksum"}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def _blobs(states: Mapping[StateKind, bytes]) -> dict[str, str]:
    return {kind.value: base64.b64encode(blob).decode() for kind, blob in states.items()}


def _unblobs(encoded: Mapping[str, str]) -> dict[StateKind, bytes]:
    return {StateKind(name): base64.b64decode(blob, validate=True) for name, blob in encoded.items()}


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


def _encode_state(state: MachineState) -> dict[str, Any]:
    return {
        "vcpus": [
            {
                "cpuid": [list(row) for row in vcpu.cpuid],
                "kvm": _blobs(vcpu.kvm),
                "msrs": [[index, value] for index, value in vcpu.msrs.items()],
                "registers": [[register, _b64(value)] for register, value in vcpu.registers.items()],
            }
            for vcpu in state.vcpus
        ],
        "vm": _blobs(state.vm),
        "transports": {device_id: transport.encode() for device_id, transport in state.transports.items()},
        "uart": {**asdict(state.uart), "rx": base64.b64encode(state.uart.rx).decode()},
        "captured_at_ns": state.captured_at_ns,
        "tsc_khz": state.tsc_khz,
        "task_vector_states": {
            str(pid): base64.b64encode(blob).decode() for pid, blob in state.task_vector_states.items()
        },
        "vgic": [_b64(value) for value in state.vgic],
    }


def _decode_state(body: dict[str, Any]) -> MachineState:
    vcpus = tuple(
        VcpuState(
            cpuid=tuple(_cpuid_row(row) for row in vcpu["cpuid"]),
            kvm=_unblobs(vcpu["kvm"]),
            msrs={int(index): int(value) for index, value in vcpu["msrs"]},
            registers={  # before version 10: x86_64's only, which keeps none
                int(register): base64.b64decode(value, validate=True) for register, value in vcpu.get("registers", ())
            },
        )
        for vcpu in body["vcpus"]
    )
    transports = {str(device): TransportState.decode(transport) for device, transport in body["transports"].items()}
    uart = UartState(**{**body["uart"], "rx": base64.b64decode(body["uart"]["rx"], validate=True)})
    return MachineState(
        vcpus=vcpus,
        vm=_unblobs(body["vm"]),
        transports=transports,
        uart=uart,
        captured_at_ns=int(body["captured_at_ns"]),
        tsc_khz=int(body["tsc_khz"]),
        task_vector_states={
            int(pid): base64.b64decode(blob, validate=True) for pid, blob in body["task_vector_states"].items()
        },
        vgic=tuple(base64.b64decode(value, validate=True) for value in body.get("vgic", ())),
    )


def _cpuid_row(row: list[int]) -> tuple[int, int, int, int, int, int, int]:
    function, index, flags, eax, ebx, ecx, edx = (int(value) for value in row)
    return function, index, flags, eax, ebx, ecx, edx
