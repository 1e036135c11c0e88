"""Registering virtio devices on a real KVM VM (no guest runs): one call wires each, found by id after."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from asupermachine._core.device_manager import X86_64_SLOTS, MmioDeviceManager
from asupermachine._core.devices.bus import Bus
from asupermachine._core.kvm import Kvm
from asupermachine._core.memory import GuestMemory
from asupermachine._core.virtio.blk import Block, Disk
from asupermachine._core.virtio.mmio import VIRTIO_MMIO_MAGIC_VALUE, VIRTIO_MMIO_SIZE
from asupermachine._core.virtio.rng import Rng


@pytest.fixture
def manager() -> Iterator[MmioDeviceManager]:
    with Kvm() as kvm:
        vm = kvm.create_vm()
        vm.create_irqchip()
        memory = GuestMemory([(0, 1 << 20)])
        devices = MmioDeviceManager(vm, Bus(), memory, X86_64_SLOTS)
        try:
            yield devices
        finally:
            vm.close()
            devices.close()
            memory.close()


def test_each_device_gets_the_next_slot_and_its_kernel_word_and_is_found_by_id(
    manager: MmioDeviceManager, tmp_path: Path
) -> None:
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(4096))
    rng = manager.register("rng", Rng())
    blk = manager.register("blk0", Block(Disk(disk, read_only=True)))
    assert manager["blk0"] is blk and manager["rng"] is rng
    assert [device_id for device_id, _ in manager] == ["rng", "blk0"]
    assert (blk.slot.base, blk.slot.irq) == (X86_64_SLOTS.base + VIRTIO_MMIO_SIZE, X86_64_SLOTS.first_irq + 1)
    assert manager.kernel_arguments == [
        f"virtio_mmio.device=4K@{X86_64_SLOTS.base:#x}:{X86_64_SLOTS.first_irq}",
        f"virtio_mmio.device=4K@{X86_64_SLOTS.base + VIRTIO_MMIO_SIZE:#x}:{X86_64_SLOTS.first_irq + 1}",
    ]
    assert blk.transport.read(VIRTIO_MMIO_MAGIC_VALUE, 4) == int.from_bytes(b"virt", "little")
    with pytest.raises(KeyError):
        manager["net0"]


def test_a_taken_id_and_one_device_too_many_are_refused_and_the_refused_device_is_closed(
    manager: MmioDeviceManager, tmp_path: Path
) -> None:
    manager.register("rng", Rng())
    with pytest.raises(ValueError, match="already registered"):
        manager.register("rng", Rng())
    for index in range(X86_64_SLOTS.capacity - 1):
        manager.register(f"rng{index}", Rng())
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(4096))
    refused = Block(Disk(disk, read_only=True))
    with pytest.raises(ValueError, match="virtio devices fit"):
        manager.register("blk0", refused)
    assert refused._fd == -1


def test_saved_transports_come_back_by_id_and_a_different_set_is_refused(manager: MmioDeviceManager) -> None:
    manager.register("rng", Rng())
    manager.register("rng2", Rng())
    saved = manager.save()
    assert set(saved) == {"rng", "rng2"}
    manager.restore(saved)
    with pytest.raises(ValueError, match="saved devices"):
        manager.restore({"rng": saved["rng"], "vsock": saved["rng2"]})
