import struct
from collections.abc import Callable, Iterator, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asupermachine import VirtqueueError
from asupermachine._core import native
from asupermachine._core.memory import GuestMemory
from asupermachine._core.virtio import net as n
from asupermachine._core.virtio.mmio import VIRTIO_F_VERSION_1, MmioTransport
from asupermachine._core.virtio.net import VIRTIO_NET_HDR as HDR
from asupermachine._core.virtio.net import Net
from asupermachine._core.virtio.queue import U16, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, Virtqueue
from asupermachine.testing import VirtqueueDriver

MAC = bytes.fromhex("525400123456")
RAM = 4 << 20
ALL_FEATURES = Net(MAC, lambda frames: None, lambda: 0).device_features | VIRTIO_F_VERSION_1


class Ring:
    """One queue's driver side: chains posted with a bump allocator over their own descriptors and data."""

    def __init__(self, memory: GuestMemory, base: int, size: int, data: int, data_size: int) -> None:
        layout = {"DESC_TABLE": base, "AVAIL_RING": base + 0x2000, "USED_RING": base + 0x3000, "DATA": data}
        self.driver = type("Driver", (VirtqueueDriver,), layout)(memory, size)
        self.memory, self.size = memory, size
        self._data, self._data_end, self._next_data = data, data + data_size, data
        self._next_descriptor = 0
        self.writable: dict[int, list[tuple[int, int]]] = {}

    @property
    def queue(self) -> Virtqueue:
        return self.driver.queue

    def _alloc(self, length: int) -> int:
        if self._next_data + length > self._data_end:
            self._next_data = self._data
        addr = self._next_data
        self._next_data += (length + 15) & ~15 or 16
        return addr

    def post(self, readable: Sequence[bytes] = (), writable: Sequence[int] = ()) -> int:
        """Make one chain available: ``readable`` buffers' bytes, then ``writable`` buffers' lengths."""
        buffers: list[tuple[int, int, int]] = []
        for data in readable:
            addr = self._alloc(len(data))
            self.memory.write(addr, data)
            buffers.append((addr, len(data), 0))
        for length in writable:
            buffers.append((self._alloc(length), length, VIRTQ_DESC_F_WRITE))
        head = self._next_descriptor
        for i, (addr, length, flags) in enumerate(buffers):
            index = (head + i) % self.size
            more = 0 if i == len(buffers) - 1 else VIRTQ_DESC_F_NEXT
            self.driver.descriptor(index, addr, length, flags | more, (index + 1) % self.size)
        self._next_descriptor = (head + len(buffers)) % self.size
        self.writable[head] = [(addr, length) for addr, length, flags in buffers if flags]
        self.driver.make_available(head)
        return head

    def used(self) -> list[tuple[int, int]]:
        return self.driver.used()

    def read_back(self, head: int, length: int) -> bytes:
        """The first ``length`` bytes the device wrote into chain ``head``'s writable buffers."""
        parts = []
        for addr, size in self.writable[head]:
            take = min(size, length)
            parts.append(self.memory.read(addr, take))
            length -= take
        return b"".join(parts)


BIG_MTU = 65520  # the harness's unless told: frames as big as a device takes


class Harness:
    """A device over two rings in one guest RAM, its transmitted frames collected in :attr:`sent`."""

    def __init__(self, features: int = 0, rx_size: int = 64, **options: object) -> None:
        self.memory = GuestMemory([(0, RAM)])
        self.rx = Ring(self.memory, 0x10000, rx_size, 0x100000, 0x180000)
        self.tx = Ring(self.memory, 0x20000, 16, 0x280000, 0x180000)
        self.sent: list[bytes] = []
        self.room = 1 << 30
        options.setdefault("mtu", BIG_MTU)
        self.device = Net(MAC, self.transmit, lambda: self.room, **options)  # type: ignore[arg-type]
        self.device.activate([self.rx.queue, self.tx.queue], features or ALL_FEATURES)

    def transmit(self, frames: list[bytearray]) -> None:
        self.sent.extend(bytes(frame) for frame in frames)


def make(features: int = 0, rx_size: int = 64, **options: object) -> Harness:
    return Harness(features, rx_size, **options)


@pytest.fixture
def net() -> Iterator[Harness]:
    harness = make()
    yield harness
    harness.memory.close()


def header(flags: int = 0, gso_type: int = 0, csum_start: int = 0, csum_offset: int = 0) -> bytes:
    return HDR.pack(flags, gso_type, 0, 0, csum_start, csum_offset, 0)


def ethernet(payload: bytes, ethertype: int = 0x0800) -> bytes:
    return bytes.fromhex("020000000001") + MAC + ethertype.to_bytes(2, "big") + payload


def reference_sum(data: bytes) -> int:
    """RFC 1071 the long way: big-endian words, end-around carry."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


# -- configuration and features -----------------------------------------------------------


def test_config_space_holds_the_mac_link_up_one_queue_pair_and_the_mtu() -> None:
    device = Net(MAC, lambda frames: None, lambda: 0, mtu=9000)
    config = bytes(device.read_config(offset, 1) for offset in range(12))
    assert config == MAC + (1).to_bytes(2, "little") + (1).to_bytes(2, "little") + (9000).to_bytes(2, "little")
    assert device.read_config(10, 2) == 9000 and device.read_config(12, 4) == 0
    assert Net(MAC, lambda frames: None, lambda: 0).read_config(10, 2) == n.DEFAULT_MTU == 1500


def test_features_offered_and_the_transport_adds_version_1() -> None:
    device = Net(MAC, lambda frames: None, lambda: 0)
    assert device.device_id == 1 and device.queue_max_sizes == (256, 256)
    assert device.device_features == (
        n.VIRTIO_NET_F_MAC | n.VIRTIO_NET_F_STATUS | n.VIRTIO_NET_F_MTU | n.VIRTIO_NET_F_MRG_RXBUF
        | n.VIRTIO_NET_F_CSUM | n.VIRTIO_NET_F_GUEST_CSUM
    )
    with GuestMemory([(0, 1 << 20)]) as memory:
        transport = MmioTransport(device, memory, interrupt=lambda: None, queue_notify=lambda index: None)
        assert transport.device_features & VIRTIO_F_VERSION_1
    untrusted = Net(MAC, lambda frames: None, lambda: 0, rx_checksums_valid=False)
    assert not untrusted.device_features & n.VIRTIO_NET_F_GUEST_CSUM


@pytest.mark.parametrize(("mac", "mtu"), [(MAC[:5], 1500), (b"\x01" + MAC[1:], 1500), (MAC, 67), (MAC, 65536)])
def test_a_bad_mac_or_mtu_is_refused(mac: bytes, mtu: int) -> None:
    with pytest.raises(ValueError):
        Net(mac, lambda frames: None, lambda: 0, mtu=mtu)


# -- transmit -----------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["header apart", "header pushed", "split frame"])
def test_a_tx_frame_reaches_the_sink_intact(net: Harness, layout: str) -> None:
    frame = ethernet(bytes(range(256)) * 6)
    if layout == "header apart":
        buffers = [header(), frame]
    elif layout == "header pushed":
        buffers = [header() + frame]
    else:
        buffers = [header()[:5], header()[5:] + frame[:3], frame[3:100], frame[100:]]
    head = net.tx.post(buffers)
    assert net.device.process_queue(n.TX_QUEUE)
    assert net.sent == [frame] and net.tx.used() == [(head, 0)]
    assert (net.device.tx_frames, net.device.tx_bytes, net.device.dropped_tx) == (1, len(frame), 0)


def ipv4_packet(protocol: int, segment: bytes) -> tuple[bytes, bytes, int]:
    """An IPv4 packet carrying ``segment``, its pseudo-header, and where the segment starts."""
    src, dst = bytes([10, 0, 2, 15]), bytes([93, 184, 216, 34])
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(segment), 1, 0x4000, 64, protocol, 0, src, dst)
    ip = ip[:10] + (~reference_sum(ip) & 0xFFFF).to_bytes(2, "big") + ip[12:]
    pseudo = src + dst + bytes([0, protocol]) + len(segment).to_bytes(2, "big")
    return ip + segment, pseudo, 20


def ipv6_packet(protocol: int, segment: bytes) -> tuple[bytes, bytes, int]:
    src, dst = bytes.fromhex("fd00" + "00" * 13 + "02"), bytes.fromhex("2001" + "0db8" + "00" * 11 + "01")
    ip = struct.pack("!IHBB16s16s", 6 << 28, len(segment), protocol, 64, src, dst)
    pseudo = src + dst + len(segment).to_bytes(4, "big") + bytes([0, 0, 0, protocol])
    return ip + segment, pseudo, 40


def udp(payload: bytes) -> tuple[bytes, int, int]:
    return struct.pack("!HHHH", 5353, 53, 8 + len(payload), 0) + payload, 17, 6


def tcp(payload: bytes) -> tuple[bytes, int, int]:
    return struct.pack("!HHIIBBHHH", 40000, 443, 7, 9, 5 << 4, 0x18, 65535, 0, 0) + payload, 6, 16


@pytest.mark.parametrize("transport", [udp, tcp])
@pytest.mark.parametrize("ip", [ipv4_packet, ipv6_packet])
@pytest.mark.parametrize("payload", [b"", b"x", b"hello, world", bytes(range(256)) * 40 + b"odd"])
def test_needs_csum_is_completed_as_the_packet_requires(
    net: Harness, transport: Callable[[bytes], tuple[bytes, int, int]],
    ip: Callable[[int, bytes], tuple[bytes, bytes, int]], payload: bytes,
) -> None:
    segment, protocol, offset = transport(payload)
    packet, pseudo, l4 = ip(protocol, segment)
    expected_checksum = (~reference_sum(pseudo + segment) & 0xFFFF) or 0xFFFF
    expected = ethernet(packet[: l4 + offset] + expected_checksum.to_bytes(2, "big") + packet[l4 + offset + 2 :],
                        0x0800 if ip is ipv4_packet else 0x86DD)
    # As Linux leaves a CHECKSUM_PARTIAL packet: the field holds the folded pseudo-header sum.
    partial = packet[: l4 + offset] + reference_sum(pseudo).to_bytes(2, "big") + packet[l4 + offset + 2 :]
    frame = ethernet(partial, 0x0800 if ip is ipv4_packet else 0x86DD)
    net.tx.post([header(n.VIRTIO_NET_HDR_F_NEEDS_CSUM, csum_start=14 + l4, csum_offset=offset), frame])
    net.device.process_queue(n.TX_QUEUE)
    assert net.sent == [expected]
    # The receiver's check: pseudo-header and segment sum to all ones.
    assert reference_sum(pseudo + net.sent[0][14 + l4 :]) == 0xFFFF


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.binary(max_size=20000), st.binary(max_size=4).map(lambda b: b * 5000),
                 st.sampled_from([b"", b"\0", b"\xff\xff" * 9000, bytes(17000), b"\xff" * 16385])))
def test_the_native_ones_complement_sum_matches_the_long_way(data: bytes) -> None:
    assert native.ones_complement_sum(data) == reference_sum(data)
    assert native.ones_complement_sum(memoryview(bytearray(b"?" + data))[1:]) == reference_sum(data)  # unaligned
    assert n.internet_checksum(data) == ((~reference_sum(data) & 0xFFFF) or 0xFFFF)


def test_tx_backpressure_leaves_chains_on_the_ring(net: Harness) -> None:
    frames = [ethernet(bytes([i]) * 1000) for i in range(3)]
    heads = [net.tx.post([header(), frame]) for frame in frames]
    net.room = 0
    assert not net.device.process_queue(n.TX_QUEUE)
    assert net.sent == [] and net.tx.used() == [] and net.tx.queue.next_avail == 0
    net.room = 1  # any room takes one frame, however large
    assert net.device.process_queue(n.TX_QUEUE)
    assert net.sent == frames[:1] and net.tx.used() == [(heads[0], 0)]
    net.room = 1 << 20
    assert net.device.process_queue(n.TX_QUEUE)
    assert net.sent == frames and [head for head, _ in net.tx.used()] == heads


def test_tx_hands_frames_over_in_bounded_batches_and_asks_for_room_between_them() -> None:
    batches: list[int] = []
    rooms = iter([1 << 30, 0])
    with GuestMemory([(0, RAM)]) as memory:
        tx = Ring(memory, 0x20000, 16, 0x100000, 0x300000)
        device = Net(MAC, lambda frames: batches.append(len(frames)), lambda: next(rooms), mtu=BIG_MTU)
        device.activate([Ring(memory, 0x10000, 16, 0x40000, 0x1000).queue, tx.queue], ALL_FEATURES)
        frame = ethernet(bytes(BIG_MTU))
        for _ in range(7):
            tx.post([header(), frame])
        assert device.process_queue(n.TX_QUEUE)
        # Four 64 KiB frames fall just short of a batch; the fifth completes it, and then there is no room.
        assert batches == [5] and len(tx.used()) == 5 and device.tx_frames == 5
        assert n.TX_BATCH_BYTES == 256 << 10


@pytest.mark.parametrize(
    ("buffers", "writable", "reason"),
    [
        ([header() + b"\0" * 13], [], "dropped_tx_malformed"),  # shorter than an Ethernet header
        ([b"\0" * 11], [], "dropped_tx_malformed"),  # not even a header
        ([], [100], "dropped_tx_malformed"),  # nothing readable
        ([header(), ethernet(bytes(1500 + 5))], [], "dropped_tx_malformed"),  # over MTU + VLAN tag
        ([header(), ethernet(bytes(100))], [4], "dropped_tx_malformed"),  # device-writable buffer
        ([header(n.VIRTIO_NET_HDR_F_NEEDS_CSUM, csum_start=100, csum_offset=13), ethernet(bytes(100))], [],
         "dropped_tx_malformed"),  # checksum field past the end
        ([header(gso_type=1), ethernet(bytes(100))], [], "dropped_tx_gso"),  # TSO, never offered
        ([header(gso_type=0x80), ethernet(bytes(100))], [], "dropped_tx_gso"),
    ],
)
def test_malformed_tx_chains_are_dropped_and_counted(buffers: list[bytes], writable: list[int], reason: str) -> None:
    net = make(mtu=1500)
    bad = net.tx.post(buffers, writable)
    good_frame = ethernet(bytes(1504))  # MTU plus a VLAN tag still passes
    good = net.tx.post([header(), good_frame])
    assert net.device.process_queue(n.TX_QUEUE)
    assert net.tx.used() == [(bad, 0), (good, 0)] and net.sent == [good_frame]
    assert getattr(net.device, reason) == 1 and net.device.dropped_tx == 1 and net.device.tx_frames == 1
    net.memory.close()


def test_a_corrupt_queue_raises_virtqueue_error(net: Harness) -> None:
    net.memory.pack(U16, net.tx.driver.AVAIL_RING + 2, 500)
    with pytest.raises(VirtqueueError):
        net.device.process_queue(n.TX_QUEUE)


# -- receive ------------------------------------------------------------------------------


def rx_header(net: Harness, head: int) -> tuple[int, ...]:
    return HDR.unpack(net.rx.read_back(head, HDR.size))


@pytest.mark.parametrize("mergeable", [True, False])
def test_a_frame_fills_one_receive_chain(mergeable: bool) -> None:
    net = make(ALL_FEATURES & ~(0 if mergeable else n.VIRTIO_NET_F_MRG_RXBUF))
    frame = ethernet(bytes(range(250)) * 6)
    head = net.rx.post(writable=[HDR.size, 1514 + 4])  # header apart, as without mergeable buffers
    assert net.device.receive(frame)
    assert net.device.process_queue(n.RX_QUEUE)
    assert net.rx.used() == [(head, HDR.size + len(frame))]
    assert rx_header(net, head) == (n.VIRTIO_NET_HDR_F_DATA_VALID, 0, 0, 0, 0, 0, 1)
    assert net.rx.read_back(head, HDR.size + len(frame))[HDR.size :] == frame
    assert (net.device.rx_frames, net.device.rx_bytes, net.device.backlog_frames) == (1, len(frame), 0)
    net.memory.close()


def test_a_large_frame_spans_mergeable_chains_with_num_buffers_in_the_first(net: Harness) -> None:
    frame = ethernet(bytes(range(256)) * 255 + bytes(range(240)))  # 65520 bytes of IP: BIG_MTU
    heads = [net.rx.post(writable=[4096]) for _ in range(20)]
    assert net.device.receive(frame)
    assert net.device.process_queue(n.RX_QUEUE)
    count = -(-(HDR.size + len(frame)) // 4096)
    used = net.rx.used()
    assert [head for head, _ in used] == heads[:count]
    assert [length for _, length in used] == [4096] * (count - 1) + [(HDR.size + len(frame)) % 4096]
    assert rx_header(net, heads[0])[6] == count == 17
    received = b"".join(net.rx.read_back(head, length) for head, length in used)[HDR.size :]
    assert received == frame
    assert net.rx.queue.next_avail == count  # the three chains left over stay available


def test_rx_waits_for_buffers_then_completes(net: Harness) -> None:
    frames = [ethernet(b"a" * 5000), ethernet(b"b" * 100)]
    for frame in frames:
        assert net.device.receive(frame)
    assert not net.device.process_queue(n.RX_QUEUE)
    first = [net.rx.post(writable=[2048]) for _ in range(2)]  # 4096 bytes: too little for the first frame
    assert not net.device.process_queue(n.RX_QUEUE)
    assert net.rx.used() == [] and net.rx.queue.next_avail == 0 and net.device.backlog_frames == 2
    more = [net.rx.post(writable=[2048]) for _ in range(2)]
    assert net.device.process_queue(n.TX_QUEUE)  # any queue's notification fills receive buffers
    assert net.rx.used() == [(first[0], 2048), (first[1], 2048), (more[0], HDR.size + 5014 - 4096),
                             (more[1], HDR.size + 114)]
    assert [rx_header(net, head)[6] for head in (first[0], more[1])] == [3, 1]
    assert net.device.backlog_frames == 0 and net.device.backlog_bytes == 0 and net.device.rx_frames == 2


def test_without_mergeable_buffers_a_frame_too_large_for_a_chain_is_dropped() -> None:
    net = make(ALL_FEATURES & ~n.VIRTIO_NET_F_MRG_RXBUF)
    head = net.rx.post(writable=[HDR.size + 1518])
    big, small = ethernet(bytes(3000)), ethernet(bytes(46))
    assert net.device.receive(big) and net.device.receive(small)
    assert net.device.process_queue(n.RX_QUEUE)
    assert net.rx.used() == [(head, HDR.size + len(small))] and net.rx.read_back(head, 72)[HDR.size :] == small
    assert (net.device.dropped_rx_no_room, net.device.dropped_rx, net.device.rx_frames) == (1, 1, 1)
    net.memory.close()


def test_a_frame_larger_than_the_whole_ring_is_dropped_not_waited_for() -> None:
    net = make(rx_size=4)
    heads = [net.rx.post(writable=[100]) for _ in range(4)]
    assert net.device.receive(ethernet(bytes(1000))) and net.device.receive(ethernet(bytes(50)))
    assert net.device.process_queue(n.RX_QUEUE)
    assert net.rx.used() == [(heads[0], 76)] and net.device.dropped_rx_no_room == 1
    net.memory.close()


def test_a_receive_chain_too_small_for_the_headers_is_handed_back_empty(net: Harness) -> None:
    tiny = net.rx.post(writable=[HDR.size + 13])
    good = net.rx.post(writable=[2048])
    net.device.receive(ethernet(b"z" * 50))
    assert net.device.process_queue(n.RX_QUEUE)
    assert net.rx.used() == [(tiny, 0), (good, HDR.size + 64)] and net.device.rx_buffers_unusable == 1


def test_no_data_valid_flag_without_guest_csum() -> None:
    net = make(ALL_FEATURES & ~n.VIRTIO_NET_F_GUEST_CSUM)
    head = net.rx.post(writable=[2048])
    net.device.receive(ethernet(b"q" * 60))
    net.device.process_queue(n.RX_QUEUE)
    assert rx_header(net, head)[0] == 0
    net.memory.close()


def test_the_backlog_is_bounded_and_frames_outside_ethernet_sizes_are_refused() -> None:
    net = make(mtu=1500, rx_backlog_frames=2)
    assert not net.device.receive(b"\0" * 13) and not net.device.receive(ethernet(bytes(1505)))
    assert net.device.receive(ethernet(bytes(1504))) and net.device.receive(ethernet(bytes(46)))
    assert not net.device.accepts_frames and not net.device.receive(ethernet(bytes(46)))
    d = net.device
    assert (d.dropped_rx_size, d.dropped_rx_backlog, d.dropped_rx, d.backlog_frames) == (2, 1, 3, 2)
    assert d.backlog_bytes == 1518 + 60
    net.memory.close()
    bytes_bound = make(rx_backlog_bytes=100)
    assert bytes_bound.device.receive(ethernet(bytes(200))) and not bytes_bound.device.receive(ethernet(bytes(46)))
    bytes_bound.memory.close()


def test_reset_forgets_the_queues_and_the_waiting_frames(net: Harness) -> None:
    net.device.receive(ethernet(bytes(46)))
    net.device.reset()
    assert net.device.backlog_frames == 0 and net.device.dropped_rx_reset == 1 == net.device.dropped_rx
    net.rx.post(writable=[2048])
    net.tx.post([header(), ethernet(bytes(46))])
    assert not net.device.process_queue(n.TX_QUEUE) and not net.device.process_queue(n.RX_QUEUE)
    assert net.rx.used() == [] and net.tx.used() == [] and net.sent == []
