from __future__ import annotations

import dataclasses

import pytest

from asupermachine import VirtqueueError
from asupermachine._core.memory import GuestMemory
from asupermachine._core.virtio import mmio as m
from asupermachine._core.virtio.mmio import MmioTransport
from asupermachine._core.virtio.queue import Virtqueue
from asupermachine.testing import VirtqueueDriver

AVAIL_RING, DESC_TABLE, USED_RING = VirtqueueDriver.AVAIL_RING, VirtqueueDriver.DESC_TABLE, VirtqueueDriver.USED_RING

FEATURE_X = 1 << 3


class FakeDevice:
    device_id = 4
    blocking_io = False
    device_features = FEATURE_X
    queue_max_sizes = (16, 8)

    def __init__(self) -> None:
        self.config = bytearray(b"\x11\x22\x33\x44")
        self.activated: tuple[list[Virtqueue], int] | None = None
        self.resets = 0

    def read_config(self, offset: int, size: int) -> int:
        return int.from_bytes(self.config[offset : offset + size], "little")

    def write_config(self, offset: int, size: int, value: int) -> None:
        self.config[offset : offset + size] = value.to_bytes(size, "little")

    def activate(self, queues: list[Virtqueue], features: int) -> None:
        self.activated = (queues, features)

    def reset(self) -> None:
        self.resets += 1


class Harness:
    def __init__(self, memory: GuestMemory) -> None:
        self.device = FakeDevice()
        self.interrupts = 0
        self.notified: list[int] = []
        self.transport = MmioTransport(
            self.device, memory, interrupt=self._interrupt, queue_notify=self.notified.append
        )

    def _interrupt(self) -> None:
        self.interrupts += 1

    def r(self, offset: int) -> int:
        return self.transport.read(offset, 4)

    def w(self, offset: int, value: int) -> None:
        self.transport.write(offset, 4, value)

    def negotiate(self, features: int = m.VIRTIO_F_VERSION_1 | FEATURE_X) -> int:
        self.w(m.VIRTIO_MMIO_STATUS, m.STATUS_ACKNOWLEDGE | m.STATUS_DRIVER)
        for select in (0, 1):
            self.w(m.VIRTIO_MMIO_DRIVER_FEATURES_SEL, select)
            self.w(m.VIRTIO_MMIO_DRIVER_FEATURES, (features >> (32 * select)) & 0xFFFF_FFFF)
        self.w(m.VIRTIO_MMIO_STATUS, m.STATUS_ACKNOWLEDGE | m.STATUS_DRIVER | m.STATUS_FEATURES_OK)
        return self.r(m.VIRTIO_MMIO_STATUS)

    def setup_queue(self, index: int, size: int, desc: int = DESC_TABLE) -> None:
        self.w(m.VIRTIO_MMIO_QUEUE_SEL, index)
        self.w(m.VIRTIO_MMIO_QUEUE_NUM, size)
        for low, addr in (
            (m.VIRTIO_MMIO_QUEUE_DESC_LOW, desc),
            (m.VIRTIO_MMIO_QUEUE_DRIVER_LOW, AVAIL_RING),
            (m.VIRTIO_MMIO_QUEUE_DEVICE_LOW, USED_RING),
        ):
            self.w(low, addr & 0xFFFF_FFFF)
            self.w(low + 4, addr >> 32)
        self.w(m.VIRTIO_MMIO_QUEUE_READY, 1)

    def driver_ok(self) -> None:
        self.w(m.VIRTIO_MMIO_STATUS, self.r(m.VIRTIO_MMIO_STATUS) | m.STATUS_DRIVER_OK)


@pytest.fixture
def harness() -> Harness:
    with GuestMemory([(0, 1 << 20)]) as memory:
        yield Harness(memory)


def test_identity_registers(harness: Harness) -> None:
    assert harness.r(m.VIRTIO_MMIO_MAGIC_VALUE) == 0x74726976
    assert harness.r(m.VIRTIO_MMIO_VERSION) == 2
    assert harness.r(m.VIRTIO_MMIO_DEVICE_ID) == 4
    harness.w(m.VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1)
    assert harness.r(m.VIRTIO_MMIO_DEVICE_FEATURES) == 1  # VIRTIO_F_VERSION_1 is bit 32
    harness.w(m.VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0)
    assert harness.r(m.VIRTIO_MMIO_DEVICE_FEATURES) == FEATURE_X | m.VIRTIO_RING_F_INDIRECT_DESC


def test_full_initialisation_activates_the_device_with_its_queues(harness: Harness) -> None:
    assert harness.negotiate() & m.STATUS_FEATURES_OK
    harness.setup_queue(0, 16)
    harness.w(m.VIRTIO_MMIO_QUEUE_SEL, 0)
    assert harness.r(m.VIRTIO_MMIO_QUEUE_NUM_MAX) == 16 and harness.r(m.VIRTIO_MMIO_QUEUE_READY) == 1
    harness.driver_ok()
    assert harness.device.activated is not None
    queues, features = harness.device.activated
    assert features == m.VIRTIO_F_VERSION_1 | FEATURE_X
    assert queues[0].ready and queues[0].desc_table == DESC_TABLE and not queues[1].ready
    harness.w(m.VIRTIO_MMIO_QUEUE_NOTIFY, 0)
    assert harness.notified == [0]


def test_legacy_drivers_without_version_1_are_refused(harness: Harness) -> None:
    assert not harness.negotiate(FEATURE_X) & m.STATUS_FEATURES_OK
    harness.driver_ok()
    assert harness.device.activated is None


def test_features_the_device_lacks_are_refused(harness: Harness) -> None:
    assert not harness.negotiate(m.VIRTIO_F_VERSION_1 | 1 << 7) & m.STATUS_FEATURES_OK


def test_a_queue_outside_guest_ram_marks_the_device_as_needing_reset(harness: Harness) -> None:
    harness.negotiate()
    harness.setup_queue(0, 16, desc=0xFFFF_0000_0000)
    harness.driver_ok()
    assert harness.r(m.VIRTIO_MMIO_STATUS) & m.STATUS_DEVICE_NEEDS_RESET
    assert harness.r(m.VIRTIO_MMIO_INTERRUPT_STATUS) & m.INTERRUPT_CONFIG_CHANGE and harness.interrupts == 1
    assert harness.device.activated is None and harness.transport.failure
    harness.w(m.VIRTIO_MMIO_QUEUE_NOTIFY, 0)
    assert harness.notified == []


def test_reset_clears_everything_and_resets_the_device(harness: Harness) -> None:
    harness.negotiate()
    harness.setup_queue(0, 8)
    harness.driver_ok()
    harness.w(m.VIRTIO_MMIO_STATUS, 0)
    assert harness.r(m.VIRTIO_MMIO_STATUS) == 0 and harness.device.resets == 1
    harness.w(m.VIRTIO_MMIO_QUEUE_SEL, 0)
    assert harness.r(m.VIRTIO_MMIO_QUEUE_READY) == 0


def test_used_buffer_interrupts_are_raised_and_acknowledged(harness: Harness) -> None:
    harness.transport.signal_used()
    assert harness.interrupts == 1 and harness.r(m.VIRTIO_MMIO_INTERRUPT_STATUS) == m.INTERRUPT_USED_BUFFER
    harness.w(m.VIRTIO_MMIO_INTERRUPT_ACK, m.INTERRUPT_USED_BUFFER)
    assert harness.r(m.VIRTIO_MMIO_INTERRUPT_STATUS) == 0


def test_a_config_change_is_a_new_generation_and_an_interrupt(harness: Harness) -> None:
    generation = harness.r(m.VIRTIO_MMIO_CONFIG_GENERATION)
    harness.transport.config_changed()
    assert harness.r(m.VIRTIO_MMIO_CONFIG_GENERATION) == generation + 1
    assert harness.interrupts == 1 and harness.r(m.VIRTIO_MMIO_INTERRUPT_STATUS) == m.INTERRUPT_CONFIG_CHANGE
    harness.w(m.VIRTIO_MMIO_INTERRUPT_ACK, m.INTERRUPT_CONFIG_CHANGE)
    assert harness.r(m.VIRTIO_MMIO_INTERRUPT_STATUS) == 0


def test_queue_registers_are_frozen_once_ready_or_driver_ok(harness: Harness) -> None:
    harness.negotiate()
    harness.setup_queue(0, 16)
    harness.w(m.VIRTIO_MMIO_QUEUE_NUM, 4)
    assert harness.transport.queues[0].size == 16
    harness.driver_ok()
    harness.w(m.VIRTIO_MMIO_QUEUE_READY, 0)
    assert harness.transport.queues[0].ready


def test_config_space_is_the_devices_at_any_width(harness: Harness) -> None:
    assert harness.transport.read(m.VIRTIO_MMIO_CONFIG + 1, 2) == 0x3322
    harness.transport.write(m.VIRTIO_MMIO_CONFIG, 1, 0x99)
    assert harness.device.config[0] == 0x99



def test_a_config_space_reads_little_endian_and_zero_past_its_end() -> None:
    config = bytes([0x11, 0x22, 0x33])
    assert m.read_config_space(config, 0, 2) == 0x2211
    assert m.read_config_space(config, 1, 4) == 0x3322
    assert m.read_config_space(config, 8, 4) == 0

@pytest.mark.parametrize("offset", [0, 1, 2, 0x0FD, 0x0FF, 0x052])
def test_unaligned_or_narrow_register_accesses_are_ignored(harness: Harness, offset: int) -> None:
    assert harness.transport.read(offset, 1) == 0
    harness.transport.write(offset, 2, 0xFFFF)
    assert harness.r(m.VIRTIO_MMIO_STATUS) == 0


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

ACCESS = st.tuples(
    st.booleans(), st.integers(0, 0x1FF), st.sampled_from([1, 2, 4, 8]), st.integers(0, (1 << 64) - 1)
)


@settings(max_examples=300, deadline=None)
@given(st.lists(ACCESS, max_size=60))
def test_register_garbage_never_raises(accesses: list[tuple[bool, int, int, int]]) -> None:
    """A guest may write anything anywhere in the window: the host neither raises nor escapes RAM."""
    with GuestMemory([(0, 1 << 20)]) as memory:
        harness = Harness(memory)
        for is_write, offset, size, value in accesses:
            if is_write:
                harness.transport.write(offset, size, value & ((1 << (8 * size)) - 1))
            else:
                assert 0 <= harness.transport.read(offset, size) < 1 << 64


def test_saved_state_restores_into_a_fresh_transport_and_reactivates_the_device(harness: Harness) -> None:
    harness.negotiate()
    harness.setup_queue(0, 16)
    harness.driver_ok()
    harness.transport.queues[0].next_avail = 5
    state = harness.transport.save()
    fresh = Harness(harness.transport.queues[0].memory)
    fresh.transport.restore(state)
    assert fresh.transport.save() == state
    assert fresh.device.activated is not None and fresh.device.activated[1] == m.VIRTIO_F_VERSION_1 | FEATURE_X
    assert fresh.transport.queues[0].next_avail == 5


def test_a_saved_queue_outside_guest_ram_is_refused_on_restore(harness: Harness) -> None:
    harness.negotiate()
    harness.setup_queue(0, 16)
    harness.driver_ok()
    state = harness.transport.save()
    outside = dataclasses.replace(state.queues[0], used_ring=0xFFFF_0000_0000)
    bad = dataclasses.replace(state, queues=(outside, state.queues[1]))
    with pytest.raises(VirtqueueError):
        Harness(harness.transport.queues[0].memory).transport.restore(bad)
