"""virtio-net (virtio 1.2, section 5.1): Ethernet frames between two queues and a host backend, sans-IO.

One queue pair and no control queue. The guest may leave TCP/UDP checksums to
the device (VIRTIO_NET_F_CSUM): they are completed here before a frame leaves.
TSO is not offered; a large MTU (the backend's, such as passt's 32 KiB) lets
the guest send big frames without it. Inbound frames wait in a bounded backlog until the guest
posts receive buffers; with mergeable buffers one frame may fill several.

Popped chains that cannot be used yet go back to the ring (its next index moves
back) rather than being held here, so all the device's guest-visible state stays
in the queues a snapshot saves.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable

from ..memory import GuestMemory
from ..native import ones_complement_sum
from .mmio import read_config_space
from .queue import Buffer, DescriptorChain, Virtqueue

# 5.1.1 Device ID
VIRTIO_ID_NET = 1
# 5.1.2 Virtqueues: one pair, no control queue (VIRTIO_NET_F_CTRL_VQ is not offered)
RX_QUEUE, TX_QUEUE = 0, 1
# 5.1.3 Feature bits
VIRTIO_NET_F_CSUM = 1 << 0
VIRTIO_NET_F_GUEST_CSUM = 1 << 1
VIRTIO_NET_F_MTU = 1 << 3
VIRTIO_NET_F_MAC = 1 << 5
VIRTIO_NET_F_MRG_RXBUF = 1 << 15
VIRTIO_NET_F_STATUS = 1 << 16
# 5.1.4 Device configuration layout: mac[6], status, max_virtqueue_pairs, mtu (le16 each)
CONFIG = struct.Struct("<6sHHH")
VIRTIO_NET_S_LINK_UP = 1
MTU_MIN, MTU_MAX = 68, 65535  # 5.1.4.1: the bounds of the mtu field
# 5.1.6 struct virtio_net_hdr_v1: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset,
# num_buffers. With VIRTIO_F_VERSION_1 (the transport requires it) num_buffers is always there.
VIRTIO_NET_HDR = struct.Struct("<BBHHHHH")
VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
VIRTIO_NET_HDR_F_DATA_VALID = 2
VIRTIO_NET_HDR_GSO_NONE = 0

ETH_HLEN = 14
VLAN_HLEN = 4  # an 802.1Q tag on top of the MTU, as Linux sizes its receive buffers
DEFAULT_MTU = 1500  # plain Ethernet, for a backend that does not say (passt's link takes more)
QUEUE_SIZE = 256
# Frames go to the sink in batches of about this many bytes, so that the copies stay in the CPU's
# caches and a sink that writes at once recycles their memory: measured, copying 64 KiB frames into
# fresh memory (a whole ring's worth kept) took over ten times longer than into memory just freed.
TX_BATCH_BYTES = 256 << 10
RX_BACKLOG_FRAMES = 256
RX_BACKLOG_BYTES = 4 << 20

FrameSink = Callable[[list[bytearray]], None]
"""Takes a batch of frames from the TX queue, oldest first (fresh bytearrays the sink may keep)."""


def internet_checksum(data: bytes | bytearray | memoryview) -> int:
    """The checksum to store over ``data``, as Linux's ``skb_checksum_help`` does: a zero result is sent as 0xFFFF.

    For UDP a zero would mean "no checksum"; for TCP the two are the same value.
    """
    return (~ones_complement_sum(data) & 0xFFFF) or 0xFFFF


class Net:
    """A network interface whose frames leave through ``transmit`` and arrive through :meth:`receive`.

    ``transmit_room()`` says how many bytes of frames the backend takes now: a
    pass over the TX queue stops popping once its frames reach that (overshooting
    by at most one frame; it is asked again after each batch handed to
    ``transmit``), and none starts while it is zero or less, so the guest's frames
    wait on its own ring. When room frees up, have the TX queue served again.
    Likewise, after :meth:`receive`, have the RX queue served; ``backlog_room()``
    is called when a full backlog takes frames again (and on a reset), so a
    backend that stopped reading while :attr:`accepts_frames` was False knows
    when to go on.

    ``rx_checksums_valid`` says the backend's frames carry correct checksums (passt
    builds them itself): the guest is then told it need not verify them
    (VIRTIO_NET_HDR_F_DATA_VALID, which the spec allows only for frames the device
    validated); without it VIRTIO_NET_F_GUEST_CSUM is not offered.

    Counters (frames and bytes of Ethernet frames, headers excluded) are plain
    attributes and survive resets.
    """

    device_id = VIRTIO_ID_NET
    queue_max_sizes = (QUEUE_SIZE, QUEUE_SIZE)
    blocking_io = False

    def __init__(
        self,
        mac: bytes,
        transmit: FrameSink,
        transmit_room: Callable[[], int],
        *,
        mtu: int = DEFAULT_MTU,
        rx_checksums_valid: bool = True,
        rx_backlog_frames: int = RX_BACKLOG_FRAMES,
        rx_backlog_bytes: int = RX_BACKLOG_BYTES,
        backlog_room: Callable[[], None] = lambda: None,
    ) -> None:
        """Raises :class:`ValueError` for a MAC that is not 6 bytes of unicast, or an MTU outside 68..65535."""
        if len(mac) != 6 or mac[0] & 1:
            raise ValueError(f"MAC {mac.hex(':')} is not a 6-byte unicast address")
        if not MTU_MIN <= mtu <= MTU_MAX:
            raise ValueError(f"MTU {mtu} is outside {MTU_MIN}..{MTU_MAX} (virtio 1.2, 5.1.4.1)")
        self.mac = bytes(mac)
        self.mtu = mtu
        self.max_frame = ETH_HLEN + VLAN_HLEN + mtu
        """The largest frame taken from the guest or given to it, in bytes."""
        self.device_features = (
            VIRTIO_NET_F_MAC | VIRTIO_NET_F_STATUS | VIRTIO_NET_F_MTU | VIRTIO_NET_F_MRG_RXBUF | VIRTIO_NET_F_CSUM
            | (VIRTIO_NET_F_GUEST_CSUM if rx_checksums_valid else 0)
        )
        self._config = CONFIG.pack(self.mac, VIRTIO_NET_S_LINK_UP, 1, mtu)
        self._transmit = transmit
        self._transmit_room = transmit_room
        self._rx_backlog_frames = rx_backlog_frames
        self._rx_backlog_bytes = rx_backlog_bytes
        self._backlog_room = backlog_room
        self._backlog: deque[bytes] = deque()
        self.backlog_bytes = 0
        """Bytes of frames waiting for receive buffers."""
        self._queues: list[Virtqueue] = []
        self._mergeable = False
        self._rx_flags = 0
        self.tx_frames = self.tx_bytes = 0
        self.dropped_tx = 0
        """Every TX chain not sent: the sum of the reasons below."""
        self.dropped_tx_malformed = 0
        """Too short or long, device-writable buffers, or a checksum position outside the frame."""
        self.dropped_tx_gso = 0
        """A segmentation offload (gso_type) the device never offered."""
        self.rx_frames = self.rx_bytes = 0
        self.dropped_rx = 0
        """Every frame given to :meth:`receive` and not delivered: the sum of the reasons below."""
        self.dropped_rx_size = 0
        """Shorter than an Ethernet header or longer than :attr:`max_frame`."""
        self.dropped_rx_backlog = 0
        """The backlog was full."""
        self.dropped_rx_no_room = 0
        """Larger than a receive buffer (without mergeable buffers) or than the whole ring's."""
        self.dropped_rx_reset = 0
        """Waiting when the driver reset the device."""
        self.rx_buffers_unusable = 0
        """Receive chains too small for a header and an Ethernet header, handed back empty."""

    # -- VirtioDevice ------------------------------------------------------------------

    def read_config(self, offset: int, size: int) -> int:
        return read_config_space(self._config, offset, size)

    def write_config(self, offset: int, size: int, value: int) -> None:
        pass  # nothing in 5.1.4 is for the driver to write

    def activate(self, queues: list[Virtqueue], features: int) -> None:
        self._queues = queues
        self._mergeable = bool(features & VIRTIO_NET_F_MRG_RXBUF)
        self._rx_flags = VIRTIO_NET_HDR_F_DATA_VALID if features & VIRTIO_NET_F_GUEST_CSUM else 0

    def reset(self) -> None:
        self._queues = []
        self.dropped_rx_reset += len(self._backlog)
        self.dropped_rx += len(self._backlog)
        self._backlog.clear()
        self.backlog_bytes = 0
        self._backlog_room()

    def close(self) -> None:
        pass  # the backend (passt and its pump) belongs to the running VM

    def process_queue(self, index: int) -> bool:
        """Send what the guest queued (on a TX notification), then fill receive buffers with waiting frames.

        Raises :class:`VirtqueueError` when the driver's queue is malformed.
        """
        if not self._queues:
            return False
        used = self._drain_tx() if index == TX_QUEUE else False
        return self._fill_rx() or used

    # -- host side ---------------------------------------------------------------------

    def receive(self, frame: bytes) -> bool:
        """Queue ``frame`` (an Ethernet frame) for the guest; False if it was dropped (counted by reason)."""
        if not ETH_HLEN <= len(frame) <= self.max_frame:
            self.dropped_rx_size += 1
        elif not self.accepts_frames:
            self.dropped_rx_backlog += 1
        else:
            self._backlog.append(frame)
            self.backlog_bytes += len(frame)
            return True
        self.dropped_rx += 1
        return False

    @property
    def accepts_frames(self) -> bool:
        """Whether the backlog has room: a backend can stop reading instead of having frames dropped."""
        return len(self._backlog) < self._rx_backlog_frames and self.backlog_bytes < self._rx_backlog_bytes

    @property
    def backlog_frames(self) -> int:
        """Frames waiting for receive buffers."""
        return len(self._backlog)

    # -- transmit ----------------------------------------------------------------------

    def _drain_tx(self) -> bool:
        tx = self._queues[TX_QUEUE]
        if not tx.ready:
            return False
        room = self._transmit_room()
        batch: list[bytearray] = []
        batch_bytes = 0
        used = False
        try:
            while room > 0 and (chain := tx.pop()) is not None:
                frame = self._take_frame(tx, chain)
                tx.add_used(chain.head, 0)
                used = True
                if frame is None:
                    self.dropped_tx += 1
                    continue
                batch.append(frame)
                batch_bytes += len(frame)
                room -= len(frame)
                self.tx_frames += 1
                self.tx_bytes += len(frame)
                if batch_bytes >= TX_BATCH_BYTES:
                    sending, batch, batch_bytes = batch, [], 0
                    self._transmit(sending)
                    room = self._transmit_room()
        finally:
            # Even when a later chain is malformed, the frames whose chains were completed leave.
            if batch:
                self._transmit(batch)
        return used

    def _take_frame(self, tx: Virtqueue, chain: DescriptorChain) -> bytearray | None:
        """The chain's frame, its checksum completed; None (counted) if it is to be dropped."""
        size = sum(buffer.length for buffer in chain.readable) - VIRTIO_NET_HDR.size
        if chain.writable or not ETH_HLEN <= size <= self.max_frame:
            self.dropped_tx_malformed += 1
            return None
        flags, gso_type, _, _, csum_start, csum_offset, _ = VIRTIO_NET_HDR.unpack(
            tx.gather(chain, VIRTIO_NET_HDR.size)
        )
        if gso_type != VIRTIO_NET_HDR_GSO_NONE:
            self.dropped_tx_gso += 1
            return None
        checksum_at = csum_start + csum_offset
        if flags & VIRTIO_NET_HDR_F_NEEDS_CSUM and checksum_at + 2 > size:
            self.dropped_tx_malformed += 1
            return None
        # One copy out of guest RAM, then the checksum over it in C (in Python it took 42 us for 32 KiB).
        views = [tx.memory.view(buffer.addr, buffer.length) for buffer in _skip(chain.readable, VIRTIO_NET_HDR.size)]
        try:
            frame = bytearray().join(views)
        finally:
            for view in views:
                view.release()
        if flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
            # 5.1.6.2: the field holds the pseudo-header sum, so summing over it gives the full checksum.
            with memoryview(frame) as view:
                checksum = internet_checksum(view[csum_start:])
            frame[checksum_at : checksum_at + 2] = checksum.to_bytes(2, "big")
        return frame

    # -- receive -----------------------------------------------------------------------

    def _fill_rx(self) -> bool:
        rx = self._queues[RX_QUEUE]
        if not rx.ready:
            return False
        used = left = False
        was_full = not self.accepts_frames
        while self._backlog:
            frame = self._backlog[0]
            chains, room, returned = self._rx_chains(rx, VIRTIO_NET_HDR.size + len(frame))
            used = used or returned
            if room >= VIRTIO_NET_HDR.size + len(frame):
                self._deliver(rx, chains, frame)
                used = True
            else:
                # Not used now, the chains are made available again (5.1.6.3: the device keeps
                # the guest's buffers); a frame that can never fit is dropped, or it would block the rest.
                rx.next_avail = (rx.next_avail - len(chains)) & 0xFFFF
                if not chains or (self._mergeable and len(chains) < rx.size):
                    break  # wait for the guest to post more
                self.dropped_rx_no_room += 1
                self.dropped_rx += 1
            self._backlog.popleft()
            self.backlog_bytes -= len(frame)
            left = True
        if left and was_full and self.accepts_frames:
            self._backlog_room()  # only a backend that found it full waits for this
        return used

    def _rx_chains(self, rx: Virtqueue, need: int) -> tuple[list[DescriptorChain], int, bool]:
        """Pop chains until ``need`` bytes fit (one chain without mergeable buffers).

        Returns the chains, their room in bytes, and whether any unusable chain was handed back.
        """
        chains: list[DescriptorChain] = []
        room = 0
        returned = False
        while room < need and (self._mergeable or not chains):
            chain = rx.pop()
            if chain is None:
                break
            capacity = chain.writable_bytes
            if not chains and capacity < VIRTIO_NET_HDR.size + ETH_HLEN:
                # Linux drops a first buffer shorter than this as a runt; handing it back
                # empty (only before any chain is kept, so the ring can still be rewound) frees it.
                rx.add_used(chain.head, 0)
                self.rx_buffers_unusable += 1
                returned = True
                continue
            chains.append(chain)
            room += capacity
        return chains, room, returned

    def _deliver(self, rx: Virtqueue, chains: list[DescriptorChain], frame: bytes) -> None:
        """Write the header and ``frame`` across ``chains`` (which hold them) and complete the chains in order."""
        memory = rx.memory
        header = VIRTIO_NET_HDR.pack(self._rx_flags, VIRTIO_NET_HDR_GSO_NONE, 0, 0, 0, 0, len(chains))
        data = memoryview(frame)
        offset = 0
        for index, chain in enumerate(chains):
            buffers = chain.writable
            if index == 0:
                _write(memory, buffers, memoryview(header))
                buffers = _skip(buffers, VIRTIO_NET_HDR.size)
            written = _write(memory, buffers, data[offset:])
            offset += written
            rx.add_used(chain.head, written + (VIRTIO_NET_HDR.size if index == 0 else 0))
        self.rx_frames += 1
        self.rx_bytes += len(frame)


def _skip(buffers: list[Buffer], count: int) -> list[Buffer]:
    """``buffers`` without their first ``count`` bytes."""
    for index, buffer in enumerate(buffers):
        if count < buffer.length:
            rest = buffers[index + 1 :]
            return [Buffer(buffer.addr + count, buffer.length - count), *rest] if count else buffers[index:]
        count -= buffer.length
    return []


def _write(memory: GuestMemory, buffers: list[Buffer], data: memoryview) -> int:
    """Copy ``data`` into ``buffers`` in order; returns how many bytes fit."""
    written = 0
    for buffer in buffers:
        if written == len(data):
            break
        piece = data[written : written + buffer.length]
        memory.write(buffer.addr, piece)
        written += len(piece)
    return written
