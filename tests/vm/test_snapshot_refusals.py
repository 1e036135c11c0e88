"""Damaged or foreign snapshots are refused, each by the check that catches it, and nothing is left behind."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from asupermachine import Machine, Snapshot, SnapshotError
from asupermachine.snapshot.manifest import Manifest, decode, encode
from asupermachine.snapshot.snapshot import MANIFEST_NAME, MEMORY_NAME
from tests.support.resources import assert_nothing_left, held


def copy_of(snapshot: Snapshot, into: Path) -> Path:
    """A copy that keeps the memory file sparse."""
    target = into / "snap"
    subprocess.run(["cp", "-r", "--sparse=always", str(snapshot.path), str(target)], check=True)
    return target


def rewrite_manifest(path: Path, change: Callable[[Manifest], Manifest]) -> None:
    """Change what the manifest says and re-checksum it, as a snapshot made elsewhere would be."""
    (path / MANIFEST_NAME).write_bytes(encode(change(manifest_of(path))))


def flip_byte(file: Path, offset: int) -> None:
    with file.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x40]))


def set_json(path: Path, key: str, value: object) -> None:
    body = json.loads((path / MANIFEST_NAME).read_bytes())
    body[key] = value
    (path / MANIFEST_NAME).write_text(json.dumps(body))


def rehashed(manifest: Manifest, path: Path) -> Manifest:
    return dataclasses.replace(manifest, sha256={**manifest.sha256, str(path): "0" * 64})


def other_kernel(manifest: Manifest) -> Manifest:
    return rehashed(manifest, manifest.recipe.kernel)


def other_root_disk(manifest: Manifest) -> Manifest:
    return rehashed(manifest, manifest.recipe.disks[0].path)


def other_cpu(manifest: Manifest) -> Manifest:
    vcpu = manifest.state.vcpus[0]
    function, index, flags, eax, ebx, ecx, edx = vcpu.cpuid[1]
    leaf_1 = (function, index, flags, eax, ebx, ecx ^ 1, edx)
    changed = dataclasses.replace(vcpu, cpuid=(vcpu.cpuid[0], leaf_1, *vcpu.cpuid[2:]))
    return dataclasses.replace(manifest, state=dataclasses.replace(manifest.state, vcpus=(changed,)))


def other_kvm_flavour(manifest: Manifest) -> Manifest:
    """As a snapshot baked under kvm_pvm reads on a kvm_amd host, or the other way round."""
    other = "kvm_amd" if manifest.host.flavour == "kvm_pvm" else "kvm_pvm"
    return dataclasses.replace(manifest, host=dataclasses.replace(manifest.host, flavour=other))


def other_cpu_model(manifest: Manifest) -> Manifest:
    return dataclasses.replace(manifest, host=dataclasses.replace(manifest.host, cpu="Some Other CPU @ 1.00GHz"))


def smaller_vm(manifest: Manifest) -> Manifest:
    recipe = dataclasses.replace(manifest.recipe, memory_mib=manifest.recipe.memory_mib * 2)
    return dataclasses.replace(manifest, recipe=recipe)


def manifest_of(path: Path) -> Manifest:
    """The manifest, read without checking the files (a check remembers the memory file's version as good,
    and a damage within the same tick of the filesystem's clock would keep that version)."""
    return decode((path / MANIFEST_NAME).read_bytes(), path / MANIFEST_NAME)


def in_memory_data(path: Path) -> None:
    offset, length = manifest_of(path).memory.extents[-1]
    flip_byte(path / MEMORY_NAME, offset + length // 2)


def in_memory_hole(path: Path) -> None:
    offset, length = manifest_of(path).memory.extents[0]
    hole = offset + length  # extents are merged: the page after one is zero
    with (path / MEMORY_NAME).open("r+b") as f:
        f.seek(hole + 100)
        f.write(b"\x01")


def truncated_memory(path: Path) -> None:
    os.truncate(path / MEMORY_NAME, manifest_of(path).memory.size // 2)


def flipped_manifest(path: Path) -> None:
    text = (path / MANIFEST_NAME).read_text()
    assert '"memory_mib": 256' in text
    (path / MANIFEST_NAME).write_text(text.replace('"memory_mib": 256', '"memory_mib": 255'))


DAMAGE = {
    "missing manifest": (lambda path: (path / MANIFEST_NAME).unlink(), "manifest"),
    "manifest not JSON": (lambda path: (path / MANIFEST_NAME).write_bytes(b"\x00garbage"), "manifest"),
    "another format version": (lambda path: set_json(path, "version", 99), "version"),
    "flipped manifest": (flipped_manifest, "checksum"),
    "other kernel": (lambda path: rewrite_manifest(path, other_kernel), "assets"),
    "other root disk": (lambda path: rewrite_manifest(path, other_root_disk), "disk"),
    "other CPU": (lambda path: rewrite_manifest(path, other_cpu), "cpu"),
    "other KVM flavour": (lambda path: rewrite_manifest(path, other_kvm_flavour), "cpu"),
    "other CPU model": (lambda path: rewrite_manifest(path, other_cpu_model), "cpu"),
    "memory file smaller than the VM": (lambda path: rewrite_manifest(path, smaller_vm), "manifest"),
    "flipped memory byte": (in_memory_data, "memory"),
    "data in a memory hole": (in_memory_hole, "memory"),
    "truncated memory": (truncated_memory, "memory"),
    "missing memory": (lambda path: (path / MEMORY_NAME).unlink(), "memory"),
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_damaged_snapshot_is_refused_by_the_right_check(baked: Snapshot, tmp_path: Path, damage: str) -> None:
    path = copy_of(baked, tmp_path)
    harm, check = DAMAGE[damage]
    harm(path)
    with pytest.raises(SnapshotError) as refused:
        Snapshot.load(path)
    assert refused.value.check == check, refused.value


@pytest.mark.anyio
async def test_restoring_a_damaged_snapshot_fails_cleanly(baked: Snapshot, tmp_path: Path) -> None:
    path = copy_of(baked, tmp_path)
    in_memory_data(path)
    before = held()
    with pytest.raises(SnapshotError):
        async with Machine.restore(path):
            pytest.fail("a damaged snapshot was restored")
    assert_nothing_left(before)
    # The damage is in the copy only.
    async with Machine.restore(baked) as vm:
        assert (await vm.exec(["true"])).exit_code == 0


def test_a_version_6_snapshot_still_loads(baked: Snapshot, tmp_path: Path) -> None:
    """Version 6 listed disks as plain paths, all read-only, and had no empty drives (before version 9)."""
    path = copy_of(baked, tmp_path)
    body = json.loads(encode(manifest_of(path)))
    body["version"] = 6
    body["recipe"]["disks"] = [disk["path"] for disk in body["recipe"]["disks"]]
    del body["recipe"]["spare_drives"], body["checksum"]
    body["checksum"] = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    (path / MANIFEST_NAME).write_text(json.dumps(body))
    loaded = Snapshot.load(path).manifest
    assert loaded.recipe.spare_drives == 0
    assert dataclasses.replace(loaded, recipe=dataclasses.replace(loaded.recipe, spare_drives=2)) == baked.manifest
