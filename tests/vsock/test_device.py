"""The vsock device over real virtqueues in guest memory, driven as the Linux driver would."""

from __future__ import annotations

import pytest

from asupermachine._core.memory import GuestMemory
from asupermachine._core.virtio.queue import (
    DESCRIPTOR,
    RING_HEADER,
    U16,
    USED_ELEM,
    VIRTQ_DESC_F_NEXT,
    VIRTQ_DESC_F_WRITE,
    Virtqueue,
)
from asupermachine._core.vsock.connection import Connected, Data, Reset
from asupermachine._core.vsock.device import EVENT_QUEUE, RX_QUEUE, TRANSPORT_RESET_EVENT, TX_QUEUE, VsockDevice
from asupermachine._core.vsock.muxer import Accepted, VsockMuxer
from asupermachine._core.vsock.packet import HEADER, Op, Packet

GUEST = 3
RX_BUFFER = 4096


class GuestDriver:
    """Two queues laid out in guest memory; RX posts header + 4 KiB chains like Linux 6.1."""

    def __init__(self, memory: GuestMemory) -> None:
        self.memory = memory
        self.queues = [self._queue(0x10000 * (i + 1)) for i in range(3)]
        self.avail = [0, 0, 0]
        self.data = 0x100000

    def _queue(self, base: int) -> Virtqueue:
        queue = Virtqueue(memory=self.memory, max_size=16)
        queue.desc_table, queue.avail_ring, queue.used_ring = base, base + 0x1000, base + 0x2000
        queue.ready = True
        return queue

    def _publish(self, index: int, buffers: list[tuple[int, int, int]]) -> None:
        queue = self.queues[index]
        head = self.avail[index] % 16
        # Each chain uses two descriptors; 16 slots hold 8 chains at a time.
        first = (head * 2) % 16
        for i, (addr, length, flags) in enumerate(buffers):
            last = i == len(buffers) - 1
            self.memory.pack(DESCRIPTOR, queue.desc_table + 16 * (first + i), addr, length,
                             flags | (0 if last else VIRTQ_DESC_F_NEXT), first + i + 1)
        slot = queue.avail_ring + RING_HEADER.size + 2 * (self.avail[index] % 16)
        self.memory.pack(U16, slot, first)
        self.avail[index] += 1
        self.memory.pack(U16, queue.avail_ring + 2, self.avail[index])

    def post_rx(self, count: int) -> None:
        for _ in range(count):
            self._publish(RX_QUEUE, [(self.data, HEADER.size, VIRTQ_DESC_F_WRITE),
                                     (self.data + 64, RX_BUFFER, VIRTQ_DESC_F_WRITE)])
            self.data += 0x2000

    def send(self, packet: Packet) -> None:
        self.memory.write(self.data, packet.encode_header())
        self.memory.write(self.data + 64, packet.payload)
        self._publish(TX_QUEUE, [(self.data, HEADER.size, 0), (self.data + 64, len(packet.payload), 0)])
        self.data += 0x2000

    def received(self) -> list[Packet]:
        queue = self.queues[RX_QUEUE]
        _, idx = self.memory.unpack(RING_HEADER, queue.used_ring)
        packets = []
        for i in range(idx):
            head, length = self.memory.unpack(USED_ELEM, queue.used_ring + 4 + 8 * i)
            addr, _, _, _ = self.memory.unpack(DESCRIPTOR, queue.desc_table + 16 * head)
            header = self.memory.read(addr, HEADER.size)
            payload = self.memory.read(addr + 64, length - HEADER.size)
            packets.append(Packet.decode(header, payload))
        return packets


@pytest.fixture
def setup() -> tuple[VsockDevice, GuestDriver, list[object]]:
    with GuestMemory([(0, 4 << 20)]) as memory:
        events: list[object] = []
        device = VsockDevice(VsockMuxer(GUEST), events.extend)
        driver = GuestDriver(memory)
        device.activate(driver.queues, 0)
        yield device, driver, events


def guest_packet(op: Op, payload: bytes = b"", dst_port: int = 1024) -> Packet:
    return Packet(GUEST, 2, 5000, dst_port, op, 0, 65536, 0, payload)


def test_guest_cid_is_in_config_space(setup: tuple[VsockDevice, GuestDriver, list[object]]) -> None:
    device, _, _ = setup
    assert device.read_config(0, 8) == GUEST and device.read_config(0, 4) == GUEST and device.read_config(4, 4) == 0


def test_host_connect_goes_out_on_rx_and_the_response_comes_back_on_tx(setup) -> None:  # type: ignore[no-untyped-def]
    device, driver, events = setup
    pair = device.muxer.connect(5000)
    driver.post_rx(4)
    assert device.process_queue(RX_QUEUE)
    (request,) = driver.received()
    assert (request.op, request.dst_port, request.dst_cid) == (Op.REQUEST, 5000, GUEST)
    driver.send(Packet(GUEST, 2, 5000, pair[0], Op.RESPONSE, 0, 65536, 0))
    assert device.process_queue(TX_QUEUE)
    assert events == [(pair, Connected())]


def test_host_data_is_split_to_fit_4k_rx_buffers(setup) -> None:  # type: ignore[no-untyped-def]
    device, driver, events = setup
    pair = device.muxer.connect(5000)
    driver.send(Packet(GUEST, 2, 5000, pair[0], Op.RESPONSE, 0, 1 << 20, 0))
    device.process_queue(TX_QUEUE)
    data = bytes(range(256)) * 40  # 10240 bytes
    assert device.muxer.send(pair, data) == len(data)
    driver.post_rx(6)
    device.process_queue(RX_QUEUE)
    rw = [p for p in driver.received() if p.op is Op.RW]
    assert [len(p.payload) for p in rw] == [4096, 4096, 2048]
    assert b"".join(p.payload for p in rw) == data


def test_packets_wait_for_rx_buffers(setup) -> None:  # type: ignore[no-untyped-def]
    device, driver, _ = setup
    device.muxer.connect(5000)
    assert not device.process_queue(RX_QUEUE)
    assert len(device.muxer.outbound) == 1
    driver.post_rx(1)
    assert device.process_queue(RX_QUEUE) and not device.muxer.outbound


def test_guest_connections_to_listening_ports_are_accepted_others_refused(setup) -> None:  # type: ignore[no-untyped-def]
    device, driver, events = setup
    device.muxer.listening.add(1024)
    driver.post_rx(4)
    driver.send(guest_packet(Op.REQUEST, dst_port=1024))
    driver.send(guest_packet(Op.REQUEST, dst_port=9999))
    device.process_queue(TX_QUEUE)
    assert events == [((1024, 5000), Accepted())]
    assert [p.op for p in driver.received()] == [Op.RESPONSE, Op.RST]
    driver.send(guest_packet(Op.RW, b"ping"))
    device.process_queue(TX_QUEUE)
    assert events[-1] == ((1024, 5000), Data(b"ping"))


def test_garbage_from_the_guest_is_dropped_and_counted(setup) -> None:  # type: ignore[no-untyped-def]
    device, driver, events = setup
    bad = Packet(GUEST, 2, 5000, 1024, Op.RW, payload=b"x")
    driver.memory.write(driver.data, bad.encode_header()[:20] + b"\xff" * 24)
    driver._publish(TX_QUEUE, [(driver.data, HEADER.size, 0)])
    assert device.process_queue(TX_QUEUE)
    assert device.dropped_packets == 1 and events == []


def test_reset_resets_every_connection(setup) -> None:  # type: ignore[no-untyped-def]
    device, _, events = setup
    pair = device.muxer.connect(5000)
    device.reset()
    assert events == [(pair, Reset())] and not device.muxer.connections


def test_transport_reset_is_posted_and_handled_once_the_driver_reposts(setup) -> None:  # type: ignore[no-untyped-def]
    device, driver, _ = setup
    handled: list[bool] = []
    assert not device.post_transport_reset(lambda: handled.append(True)) and handled == [True]  # no buffer yet
    handled.clear()
    driver._publish(EVENT_QUEUE, [(0x300000, 4, VIRTQ_DESC_F_WRITE)])
    assert device.post_transport_reset(lambda: handled.append(True))
    events = driver.queues[EVENT_QUEUE]
    _, used = driver.memory.unpack(RING_HEADER, events.used_ring)
    assert used == 1 and driver.memory.read(0x300000, 4) == TRANSPORT_RESET_EVENT and not handled
    driver._publish(EVENT_QUEUE, [(0x300000, 4, VIRTQ_DESC_F_WRITE)])
    device.process_queue(EVENT_QUEUE)
    assert handled == [True]
