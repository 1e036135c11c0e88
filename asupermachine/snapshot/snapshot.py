"""A snapshot on disk: a directory holding ``snapshot.json``, the sparse ``memory`` file and ``disks/``.

``disks/`` holds a frozen copy of each disk the VM could write (``vdb.img``, ...):
its restores see it copy-on-write, so it never changes. A paused machine's snapshot
keeps its writable disks in place instead: only its resume may write them.

:func:`write_snapshot` takes one of a running VM (which keeps running);
:meth:`Snapshot.load` checks one completely before anything of it is mapped.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .._cache import cache_root, content_key, file_sha256, remembered
from .._core.arch.x86_64.cpuid import guest_cpuid
from .._core.builder import RestorePoint
from .._core.kvm import Kvm
from .._core.kvm.host import this_host
from .._core.microvm import MIB, block_device
from .._core.persist import MachineState
from .._core.recipe import ProcessDefaults, VmRecipe
from .._core.virtio.blk import Disk
from .._errors import SnapshotError
from ..guest import resolve_assets
from .manifest import Manifest, decode, encode, is_kept
from .memory_file import MemoryImage, verify_memory

MANIFEST_NAME = "snapshot.json"
MEMORY_NAME = "memory"
DISKS_DIR = "disks"
VERIFIED = "verified"


@dataclass(frozen=True)
class Snapshot:
    """A checked snapshot: restore it with :meth:`Machine.restore`, as often and as concurrently as wanted."""

    path: Path
    manifest: Manifest

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Snapshot:
        """Read and check the snapshot at ``path`` (blocking: it hashes the memory file and assets).

        Raises :class:`SnapshotError` naming the failed check: ``manifest``,
        ``version``, ``checksum``, ``assets``, ``disk``, ``cpu`` (another KVM
        flavour or CPU) or ``memory``.
        """
        root = Path(path)
        try:
            data = (root / MANIFEST_NAME).read_bytes()
        except OSError as e:
            raise SnapshotError("manifest", f"cannot read {root / MANIFEST_NAME}: {e.strerror}") from None
        manifest = decode(data, root / MANIFEST_NAME)
        _check_assets(manifest)
        for disk in manifest.recipe.disks:
            if not is_kept(disk):
                _check_disk(root / disk.path, manifest.sha256[str(disk.path)])
        _check_cpu(manifest)
        if manifest.memory.size != manifest.recipe.memory_mib * MIB:
            # The VM maps this much of the file: anything shorter would fault the host.
            size, mib = manifest.memory.size, manifest.recipe.memory_mib
            raise SnapshotError("manifest", f"a memory file of {size} bytes for a VM of {mib} MiB")
        _check_memory(root / MEMORY_NAME, manifest)
        return cls(root, manifest)

    @property
    def memory_file(self) -> Path:
        return self.path / MEMORY_NAME

    @property
    def recipe(self) -> VmRecipe:
        """The recipe its restores run: the frozen disks' paths made absolute."""
        disks = tuple(dataclasses.replace(disk, path=self.path / disk.path) for disk in self.manifest.recipe.disks)
        return dataclasses.replace(self.manifest.recipe, disks=disks)

    @property
    def kept_disks(self) -> tuple[Path, ...]:
        """The writable disks kept in place (a paused machine's), by path; empty for a snapshot to clone."""
        return tuple(Path(disk.path) for disk in self.manifest.recipe.disks if is_kept(disk))

    def restore_point(self) -> RestorePoint:
        return RestorePoint(self.manifest.state, self.memory_file)


def is_snapshot(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a snapshot's directory (it holds a manifest), as opposed to, say, an image name."""
    return (Path(path) / MANIFEST_NAME).is_file()


Capture = Callable[[Path, Mapping[int, Path]], tuple[MachineState, MemoryImage]]
"""``capture(memory_path, frozen)``: write the VM's memory file and each disk ``frozen[index]``, return its state."""


def write_snapshot(path: Path, recipe: VmRecipe, capture: Capture, *, keep_writable: bool = False) -> Snapshot:
    """Write a snapshot of a running VM of ``recipe`` into the new directory ``path`` (blocking).

    ``capture(memory_path, frozen)`` writes the VM's memory file there and a copy of
    each writable disk (by index) to its path in ``frozen``, holding the VM still
    meanwhile, and returns its state. With ``keep_writable`` (a pause), writable disks
    that are files of the user's are not copied but kept in place. Raises
    ``FileExistsError`` if ``path`` exists.
    """
    if path.exists():
        raise FileExistsError(f"{path} already exists")
    frozen = {
        index: Path(DISKS_DIR, f"{Path(block_device(index)).name}.img")
        for index, disk in enumerate(recipe.disks)
        if not disk.read_only and not (keep_writable and not disk.copy_on_write)
    }
    recipe = dataclasses.replace(
        recipe,
        kernel=Path(recipe.kernel).resolve(),
        initramfs=Path(recipe.initramfs).resolve(),
        disks=tuple(
            Disk(frozen[index], read_only=False, copy_on_write=True) if index in frozen
            else Disk(Path(disk.path).resolve(), read_only=disk.read_only)
            for index, disk in enumerate(recipe.disks)
        ),
        # What init ran and the image's env live in guest memory; the manifest keeps neither.
        command=(),
        defaults=ProcessDefaults(),
    )
    files = (recipe.kernel, recipe.initramfs, *(disk.path for disk in recipe.disks if disk.read_only))
    sha256 = {str(path): file_sha256(path) for path in files}
    staging = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    (staging / DISKS_DIR).mkdir(parents=True)
    try:
        state, image = capture(staging / MEMORY_NAME, {index: staging / name for index, name in frozen.items()})
        sha256 |= {str(name): file_sha256(staging / name) for name in frozen.values()}
        manifest = Manifest(recipe=recipe, sha256=sha256, memory=image, state=state, host=this_host())
        _write_synced(staging / MANIFEST_NAME, encode(manifest))
        os.rename(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Snapshot(path, manifest)


def _write_synced(path: Path, data: bytes) -> None:
    with path.open("xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def vouch_for_memory(directory: Path, manifest: Manifest) -> None:
    """Remember the memory file of the snapshot in ``directory`` as verified, by the process that has just
    written and synced it (a pause about to be resumed): its next load need not read it all again. Any
    later write to the file changes its version, which is then checked as any other."""
    remembered(directory / MEMORY_NAME, _memory_question(manifest.memory), lambda _: VERIFIED, VERIFIED.__eq__)


def _memory_question(image: MemoryImage) -> str:
    return f"memory {image.size} {image.blake2b} {content_key(repr(image.extents).encode())}"


def _check_memory(path: Path, manifest: Manifest) -> None:
    """The memory file must hold what the manifest recorded; checked once per version of the file."""
    image = manifest.memory

    def verified(version: Path) -> str:
        verify_memory(version, image)
        return VERIFIED

    try:
        remembered(path, _memory_question(image), verified, VERIFIED.__eq__)
    except OSError as e:
        raise SnapshotError("memory", f"cannot read {path}: {e.strerror}") from None


def _check_disk(path: Path, sha256: str) -> None:
    try:
        digest = file_sha256(path)
    except OSError as e:
        raise SnapshotError("disk", f"cannot read {path}: {e.strerror}") from None
    if digest != sha256:
        raise SnapshotError("disk", f"{path} is not the disk the snapshot was taken with")


def _check_assets(manifest: Manifest) -> None:
    """The snapshot's guest (kernel, init and agent) must be the one this build of the project runs, where
    it was the project's own (built in its cache): a guest booted from files of the user's is theirs."""
    recipe = manifest.recipe
    if not any(saved.is_relative_to(cache_root()) for saved in (recipe.kernel, recipe.initramfs)):
        return
    try:
        assets = resolve_assets()
    except OSError as e:
        raise SnapshotError("assets", f"this build's guest assets cannot be read: {e}") from None
    pairs = (("kernel", recipe.kernel, assets.kernel), ("init and agent", recipe.initramfs, assets.initramfs))
    for what, saved, path in pairs:
        if saved.is_relative_to(cache_root()) and file_sha256(path) != manifest.sha256[str(saved)]:
            raise SnapshotError("assets", f"the snapshot's guest {what} is not this build's ({path})")


def _check_cpu(manifest: Manifest) -> None:
    """The snapshot must come from this KVM flavour and CPU, and its CPUID be what this host gives now."""
    if manifest.host != this_host():
        raise SnapshotError(
            "cpu", f"the snapshot was taken under {manifest.host}, this host runs {this_host()}: "
            "a VM's saved CPU state fits only the KVM and CPU it ran on (bake it again here)",
        )
    model, vcpus = manifest.recipe.cpu_model, manifest.recipe.vcpus
    if len(manifest.state.vcpus) != vcpus:
        raise SnapshotError("manifest", f"{len(manifest.state.vcpus)} vCPU states for {vcpus} vCPUs")
    if not any(vcpu.cpuid for vcpu in manifest.state.vcpus):
        return  # arm64: no CPUID; the host's CPU was compared above
    with Kvm() as kvm:
        supported = kvm.supported_cpuid()
    for index, vcpu in enumerate(manifest.state.vcpus):
        if tuple(guest_cpuid(supported, model, index, vcpus)) != vcpu.cpuid:
            raise SnapshotError("cpu", f"this host's CPU differs from the one vCPU {index} was saved on")
