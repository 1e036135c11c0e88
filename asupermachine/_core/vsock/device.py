"""The virtio-vsock device (virtio 1.2, section 5.10): moves packets between its queues and a muxer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from ..._errors import VsockError
from ..virtio.mmio import read_config_space
from ..virtio.queue import Virtqueue
from .muxer import MuxEvent, PortPair, VsockMuxer
from .packet import HEADER, MAX_PAYLOAD, VIRTIO_ID_VSOCK, Packet

RX_QUEUE, TX_QUEUE, EVENT_QUEUE = 0, 1, 2
# Linux posts a 4 KiB buffer in every RX slot at probe: 64 keep 256 KiB in flight, and
# cost the (emulated, under software KVM) guest kernel a quarter of what 256 did at boot.
QUEUE_SIZE = 64
EVENT_QUEUE_SIZE = 16
GUEST_CID_CONFIG_SIZE = 8
# 5.10.6.7: struct virtio_vsock_event { le32 id; }, id 0 = VIRTIO_VSOCK_EVENT_TRANSPORT_RESET
TRANSPORT_RESET_EVENT = (0).to_bytes(4, "little")

VsockEvents = Callable[[list[tuple[PortPair, MuxEvent]]], None]


class VsockDevice:
    """Guest packets from the TX queue go to the muxer; its outbound packets fill RX buffers."""

    device_id = VIRTIO_ID_VSOCK
    device_features = 0
    queue_max_sizes = (QUEUE_SIZE, QUEUE_SIZE, EVENT_QUEUE_SIZE)
    blocking_io = False

    def __init__(self, muxer: VsockMuxer, on_events: VsockEvents) -> None:
        self.muxer = muxer
        self._on_events = on_events
        self._queues: list[Virtqueue] = []
        self.dropped_packets = 0
        self._on_reset_handled: Callable[[], None] | None = None

    def read_config(self, offset: int, size: int) -> int:
        return read_config_space(self.muxer.guest_cid.to_bytes(GUEST_CID_CONFIG_SIZE, "little"), offset, size)

    def write_config(self, offset: int, size: int, value: int) -> None:
        pass  # 5.10.4: the configuration is read-only

    def activate(self, queues: list[Virtqueue], features: int) -> None:
        self._queues = queues

    def reset(self) -> None:
        self._queues = []
        self._on_events(self.muxer.reset_all())

    def close(self) -> None:
        pass  # the muxer holds no resource; its host side closes with the VM

    def post_transport_reset(self, handled: Callable[[], None]) -> bool:
        """Tell the driver its connections are gone (after a restore); True if the event was queued.

        The guest resets every connected socket (listening ones stay), then posts a
        fresh event buffer: ``handled`` is called then, and only after it may new
        connections be made, or the reset would take them too. Without an event
        buffer to use, ``handled`` is called at once.
        """
        chain = self._queues[EVENT_QUEUE].pop() if self._queues else None
        if chain is None:
            handled()
            return False
        events = self._queues[EVENT_QUEUE]
        events.add_used(chain.head, events.scatter(chain, TRANSPORT_RESET_EVENT))
        self._on_reset_handled = handled
        return True

    def process_queue(self, index: int) -> bool:
        if not self._queues:
            return False
        if index == EVENT_QUEUE and self._on_reset_handled is not None:
            self._on_reset_handled()  # the driver re-posted its event buffer
            self._on_reset_handled = None
        used = False
        if index == TX_QUEUE:
            used = self._drain_tx()
        # Whatever woke us, answers or host data may be waiting for RX buffers.
        return self._fill_rx() or used

    def _drain_tx(self) -> bool:
        tx = self._queues[TX_QUEUE]
        used = False
        while (chain := tx.pop()) is not None:
            raw = tx.gather(chain, HEADER.size + MAX_PAYLOAD)
            tx.add_used(chain.head, 0)
            used = True
            try:
                packet = Packet.decode(raw[: HEADER.size], raw[HEADER.size :])
            except VsockError:
                self.dropped_packets += 1
                continue
            events = self.muxer.from_guest(packet)
            if events:
                self._on_events(events)
        return used

    def _fill_rx(self) -> bool:
        rx, outbound = self._queues[RX_QUEUE], self.muxer.outbound
        used = False
        while outbound:
            chain = rx.pop()
            if chain is None:
                break  # no buffers: the packets wait for the guest to post more
            room = chain.writable_bytes - HEADER.size
            packet = outbound.popleft()
            if room < 0:
                # Smaller than a header: the driver's bug. Hand the buffer back empty.
                outbound.appendleft(packet)
                rx.add_used(chain.head, 0)
            else:
                if len(packet.payload) > room:
                    # Linux posts 4 KiB RX buffers: the rest of a stream packet goes in the next,
                    # as a view (copying the rest for each buffer made big packets quadratic).
                    payload = memoryview(packet.payload)
                    outbound.appendleft(replace(packet, payload=payload[room:]))
                    packet = replace(packet, payload=payload[:room])
                rx.add_used(chain.head, rx.scatter(chain, packet.encode_header() + packet.payload))
            used = True
        return used
