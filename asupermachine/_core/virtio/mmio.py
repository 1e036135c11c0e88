"""The virtio-mmio transport (virtio 1.2, section 4.2.2), modern layout, as a sans-IO bus device.

It owns the register file and the device status state machine; the device behind it
only sees negotiated features, config-space accesses and, once the driver sets
DRIVER_OK, its validated queues. Interrupts and queue notifications leave through
callables, so the same class runs under the vCPU loop and in unit tests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ..._errors import VirtqueueError
from ..memory import GuestMemory
from .queue import QueueState, Virtqueue

# 4.2.2 MMIO Device Register Layout
VIRTIO_MMIO_MAGIC_VALUE = 0x000
VIRTIO_MMIO_VERSION = 0x004
VIRTIO_MMIO_DEVICE_ID = 0x008
VIRTIO_MMIO_VENDOR_ID = 0x00C
VIRTIO_MMIO_DEVICE_FEATURES = 0x010
VIRTIO_MMIO_DEVICE_FEATURES_SEL = 0x014
VIRTIO_MMIO_DRIVER_FEATURES = 0x020
VIRTIO_MMIO_DRIVER_FEATURES_SEL = 0x024
VIRTIO_MMIO_QUEUE_SEL = 0x030
VIRTIO_MMIO_QUEUE_NUM_MAX = 0x034
VIRTIO_MMIO_QUEUE_NUM = 0x038
VIRTIO_MMIO_QUEUE_READY = 0x044
VIRTIO_MMIO_QUEUE_NOTIFY = 0x050
VIRTIO_MMIO_INTERRUPT_STATUS = 0x060
VIRTIO_MMIO_INTERRUPT_ACK = 0x064
VIRTIO_MMIO_STATUS = 0x070
VIRTIO_MMIO_QUEUE_DESC_LOW = 0x080
VIRTIO_MMIO_QUEUE_DESC_HIGH = 0x084
VIRTIO_MMIO_QUEUE_DRIVER_LOW = 0x090
VIRTIO_MMIO_QUEUE_DRIVER_HIGH = 0x094
VIRTIO_MMIO_QUEUE_DEVICE_LOW = 0x0A0
VIRTIO_MMIO_QUEUE_DEVICE_HIGH = 0x0A4
VIRTIO_MMIO_CONFIG_GENERATION = 0x0FC
VIRTIO_MMIO_CONFIG = 0x100
VIRTIO_MMIO_SIZE = 0x1000

MAGIC_VALUE = 0x7472_6976  # "virt"
MMIO_VERSION_MODERN = 2
VENDOR_ID = 0x4153_4D56  # "VMSA": this VMM
# 2.1 Device Status Field
STATUS_ACKNOWLEDGE = 1
STATUS_DRIVER = 2
STATUS_DRIVER_OK = 4
STATUS_FEATURES_OK = 8
STATUS_DEVICE_NEEDS_RESET = 64
# 4.2.2: InterruptStatus bits
INTERRUPT_USED_BUFFER = 1
INTERRUPT_CONFIG_CHANGE = 2
# 6 Reserved Feature Bits
VIRTIO_F_VERSION_1 = 1 << 32
# Every Virtqueue follows indirect descriptor tables (2.7.5.3), so every device offers them.
VIRTIO_RING_F_INDIRECT_DESC = 1 << 28


class VirtioDevice(Protocol):
    """What a device (blk, rng, vsock, ...) offers its transport."""

    @property
    def device_id(self) -> int: ...

    @property
    def device_features(self) -> int: ...

    @property
    def queue_max_sizes(self) -> tuple[int, ...]: ...

    @property
    def blocking_io(self) -> bool:
        """True if serving a queue may wait on IO (a disk file): it then runs in a worker thread."""
        ...

    def read_config(self, offset: int, size: int) -> int: ...

    def write_config(self, offset: int, size: int, value: int) -> None: ...

    def activate(self, queues: list[Virtqueue], features: int) -> None: ...

    def process_queue(self, index: int) -> bool:
        """Serve what the driver queued on ``index``; True if used buffers were added.

        Raises :class:`VirtqueueError` when the driver's queue is malformed.
        """
        ...

    def reset(self) -> None: ...

    def close(self) -> None:
        """Release the device's backend (a disk's file), if it has one."""
        ...


def read_config_space(config: bytes, offset: int, size: int) -> int:
    """The ``size`` bytes at ``offset`` of a device's config space ``config``, little-endian; zero past its end."""
    return int.from_bytes(config[offset : offset + size].ljust(size, b"\0"), "little")


@dataclass(frozen=True)
class TransportState:
    """A snapshot of the register file and queues; the device rebuilds the rest on activation."""

    status: int
    interrupt_status: int
    driver_features: int
    config_generation: int
    device_features_sel: int
    driver_features_sel: int
    queue_sel: int
    queues: tuple[QueueState, ...]

    def encode(self) -> dict[str, Any]:
        """As plain JSON values."""
        return {**dataclasses.asdict(self), "queues": [queue.encode() for queue in self.queues]}

    @classmethod
    def decode(cls, body: Mapping[str, Any]) -> TransportState:
        """From :meth:`encode`'s values; raises ``KeyError``, ``TypeError`` or ``ValueError`` for others."""
        return cls(
            status=int(body["status"]), interrupt_status=int(body["interrupt_status"]),
            driver_features=int(body["driver_features"]), config_generation=int(body["config_generation"]),
            device_features_sel=int(body["device_features_sel"]), driver_features_sel=int(body["driver_features_sel"]),
            queue_sel=int(body["queue_sel"]), queues=tuple(QueueState.decode(queue) for queue in body["queues"]),
        )


class MmioTransport:
    """The register file of one virtio-mmio device slot."""

    def __init__(
        self,
        device: VirtioDevice,
        memory: GuestMemory,
        *,
        interrupt: Callable[[], None],
        queue_notify: Callable[[int], None],
    ) -> None:
        self.device = device
        self._interrupt = interrupt
        self._queue_notify = queue_notify
        self.queues = [Virtqueue(memory, size) for size in device.queue_max_sizes]
        self.status = 0
        self.interrupt_status = 0
        self.driver_features = 0
        self.config_generation = 0
        self._device_features_sel = 0
        self._driver_features_sel = 0
        self._queue_sel = 0
        self.failure: str | None = None

    @property
    def device_features(self) -> int:
        return self.device.device_features | VIRTIO_F_VERSION_1 | VIRTIO_RING_F_INDIRECT_DESC

    @property
    def active(self) -> bool:
        return bool(self.status & STATUS_DRIVER_OK) and not self.status & STATUS_DEVICE_NEEDS_RESET

    # -- device side -----------------------------------------------------------------

    def signal_used(self) -> None:
        """Tell the driver that used buffers are waiting."""
        self.interrupt_status |= INTERRUPT_USED_BUFFER
        self._interrupt()

    def config_changed(self) -> None:
        """Tell the driver that the device's configuration space changed (4.2.2.1: a new generation)."""
        self.config_generation = (self.config_generation + 1) & 0xFFFF_FFFF
        self.interrupt_status |= INTERRUPT_CONFIG_CHANGE
        self._interrupt()

    def fail(self, reason: str) -> None:
        """The driver broke the protocol: stop the device until the driver resets it (2.1.2)."""
        self.failure = reason
        self.status |= STATUS_DEVICE_NEEDS_RESET
        self.interrupt_status |= INTERRUPT_CONFIG_CHANGE
        self._interrupt()

    def save(self) -> TransportState:
        return TransportState(
            self.status, self.interrupt_status, self.driver_features, self.config_generation,
            self._device_features_sel, self._driver_features_sel, self._queue_sel,
            tuple(queue.save() for queue in self.queues),
        )

    def restore(self, state: TransportState) -> None:
        """Take ``state`` back into a freshly created transport, activating the device if it was.

        Raises :class:`VirtqueueError` if the saved queues do not fit this device or guest memory.
        """
        if len(state.queues) != len(self.queues):
            raise VirtqueueError(f"saved state has {len(state.queues)} queues, the device {len(self.queues)}")
        for queue, queue_state in zip(self.queues, state.queues, strict=True):
            if queue_state.size > queue.max_size:
                raise VirtqueueError(f"saved queue size {queue_state.size} exceeds {queue.max_size}")
            queue.restore(queue_state)
        self.status, self.interrupt_status = state.status & 0xFF, state.interrupt_status
        self.driver_features, self.config_generation = state.driver_features, state.config_generation
        self._device_features_sel = state.device_features_sel
        self._driver_features_sel = state.driver_features_sel
        self._queue_sel = state.queue_sel
        if self.active:
            self.device.activate(self.queues, self.driver_features)

    # -- guest side (bus device) -------------------------------------------------------

    def read(self, offset: int, size: int) -> int:
        if offset >= VIRTIO_MMIO_CONFIG:
            return self.device.read_config(offset - VIRTIO_MMIO_CONFIG, size)
        if size != 4 or offset % 4:
            return 0  # 4.2.2.2: registers are only accessed 32 bits wide and aligned
        queue = self._selected_queue()
        if offset == VIRTIO_MMIO_MAGIC_VALUE:
            return MAGIC_VALUE
        if offset == VIRTIO_MMIO_VERSION:
            return MMIO_VERSION_MODERN
        if offset == VIRTIO_MMIO_DEVICE_ID:
            return self.device.device_id
        if offset == VIRTIO_MMIO_VENDOR_ID:
            return VENDOR_ID
        if offset == VIRTIO_MMIO_DEVICE_FEATURES:
            return (self.device_features >> (32 * self._device_features_sel)) & 0xFFFF_FFFF
        if offset == VIRTIO_MMIO_QUEUE_NUM_MAX:
            return queue.max_size if queue else 0
        if offset == VIRTIO_MMIO_QUEUE_READY:
            return int(queue.ready) if queue else 0
        if offset == VIRTIO_MMIO_INTERRUPT_STATUS:
            return self.interrupt_status
        if offset == VIRTIO_MMIO_STATUS:
            return self.status
        if offset == VIRTIO_MMIO_CONFIG_GENERATION:
            return self.config_generation
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        if offset >= VIRTIO_MMIO_CONFIG:
            self.device.write_config(offset - VIRTIO_MMIO_CONFIG, size, value)
            return
        if size != 4 or offset % 4:
            return
        if offset == VIRTIO_MMIO_DEVICE_FEATURES_SEL:
            self._device_features_sel = value
        elif offset == VIRTIO_MMIO_DRIVER_FEATURES_SEL:
            self._driver_features_sel = value
        elif offset == VIRTIO_MMIO_DRIVER_FEATURES:
            self._set_driver_features(value)
        elif offset == VIRTIO_MMIO_QUEUE_SEL:
            self._queue_sel = value
        elif offset == VIRTIO_MMIO_QUEUE_NOTIFY:
            if self.active and value < len(self.queues):
                self._queue_notify(value)
        elif offset == VIRTIO_MMIO_INTERRUPT_ACK:
            self.interrupt_status &= ~value
        elif offset == VIRTIO_MMIO_STATUS:
            self._set_status(value)
        else:
            self._write_queue_register(offset, value)

    # -- internals -----------------------------------------------------------------------

    def _selected_queue(self) -> Virtqueue | None:
        return self.queues[self._queue_sel] if self._queue_sel < len(self.queues) else None

    def _set_driver_features(self, value: int) -> None:
        # 3.1.1: features are only written between DRIVER and FEATURES_OK.
        if self.status & STATUS_FEATURES_OK or self._driver_features_sel > 1:
            return
        shift = 32 * self._driver_features_sel
        self.driver_features = (self.driver_features & ~(0xFFFF_FFFF << shift)) | (value << shift)

    def _write_queue_register(self, offset: int, value: int) -> None:
        queue = self._selected_queue()
        # 4.2.2.3: queue registers are written before DRIVER_OK, while the queue is not ready.
        if queue is None or self.status & STATUS_DRIVER_OK:
            return
        if offset == VIRTIO_MMIO_QUEUE_READY:
            queue.ready = bool(value & 1)
        elif queue.ready:
            return
        elif offset == VIRTIO_MMIO_QUEUE_NUM:
            queue.size = value
        elif offset in (VIRTIO_MMIO_QUEUE_DESC_LOW, VIRTIO_MMIO_QUEUE_DESC_HIGH):
            queue.desc_table = _set_half(queue.desc_table, value, offset == VIRTIO_MMIO_QUEUE_DESC_HIGH)
        elif offset in (VIRTIO_MMIO_QUEUE_DRIVER_LOW, VIRTIO_MMIO_QUEUE_DRIVER_HIGH):
            queue.avail_ring = _set_half(queue.avail_ring, value, offset == VIRTIO_MMIO_QUEUE_DRIVER_HIGH)
        elif offset in (VIRTIO_MMIO_QUEUE_DEVICE_LOW, VIRTIO_MMIO_QUEUE_DEVICE_HIGH):
            queue.used_ring = _set_half(queue.used_ring, value, offset == VIRTIO_MMIO_QUEUE_DEVICE_HIGH)

    def _set_status(self, value: int) -> None:
        if value == 0:
            self._reset()
            return
        value &= 0xFF
        if value & ~self.status & STATUS_FEATURES_OK:
            unsupported = self.driver_features & ~self.device_features
            if unsupported or not self.driver_features & VIRTIO_F_VERSION_1:
                value &= ~STATUS_FEATURES_OK  # 3.1.1: the driver re-reads and sees the refusal
        if value & ~self.status & STATUS_DRIVER_OK:
            if not self.status & STATUS_FEATURES_OK:
                return
            self.status = value
            self._activate()
            return
        self.status = value

    def _activate(self) -> None:
        ready = [queue for queue in self.queues if queue.ready]
        try:
            for queue in ready:
                queue.validate()
        except VirtqueueError as error:
            self.fail(str(error))
            return
        self.device.activate(self.queues, self.driver_features)

    def _reset(self) -> None:
        self.device.reset()
        for queue in self.queues:
            queue.reset()
        self.status = 0
        self.interrupt_status = 0
        self.driver_features = 0
        self._device_features_sel = self._driver_features_sel = self._queue_sel = 0
        self.failure = None


def _set_half(current: int, value: int, high: bool) -> int:
    """Replace the low or high 32 bits of a 64-bit guest-physical address."""
    if high:
        return (current & 0xFFFF_FFFF) | ((value & 0xFFFF_FFFF) << 32)
    return (current & ~0xFFFF_FFFF) | (value & 0xFFFF_FFFF)
