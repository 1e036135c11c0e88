"""Whatever a guest puts on its rings, virtio-net stays in guest RAM, loses no chain, counts every frame."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from asupermachine import VirtqueueError
from asupermachine._core.memory import GuestMemory
from asupermachine._core.virtio import net as n
from asupermachine._core.virtio.net import VIRTIO_NET_HDR as HDR
from asupermachine._core.virtio.net import Net
from asupermachine._core.virtio.queue import Virtqueue

from .test_net import ALL_FEATURES, MAC, Ring

# Two regions with a hole between them: a buffer straddling it is outside guest RAM.
LAYOUT = [(0, 0x100000), (0x200000, 0x40000)]
AREAS = {  # where garbage may land: everything the driver writes, not the used rings (which only the device does)
    "rx descriptors": (0x10000, 16 * 16), "rx avail entries": (0x12004, 2 * 16),
    "tx descriptors": (0x20000, 16 * 16), "tx avail entries": (0x22004, 2 * 16),
    "rx data": (0x40000, 0x60000), "tx data": (0x200000, 0x40000),
}
U16 = st.integers(0, 0xFFFF)
HEADERS = st.builds(
    lambda flags, gso, start, offset: HDR.pack(flags, gso, 0, 0, start, offset, 0),
    st.one_of(st.sampled_from([0, 0, 1, 1, 2, 3]), st.integers(0, 255)),
    st.one_of(st.sampled_from([0, 0, 0, 0, 0, 1, 3, 4, 5, 0x80]), st.integers(0, 255)),
    st.one_of(st.integers(0, 60), U16),
    st.one_of(st.integers(0, 20), U16),
)
FRAMES = st.one_of(st.binary(min_size=14, max_size=100), st.binary(max_size=14), st.integers(1400, 1600).map(bytes),
                   st.integers(0, 9100).map(bytes))
# Mostly well formed: a header and a frame split at random points, sometimes a device-writable buffer after.
TX_CHAINS = st.tuples(HEADERS, FRAMES, st.lists(st.integers(0, 2000), max_size=3),
                      st.one_of(st.just([]), st.just([]), st.lists(st.integers(1, 64), max_size=2)))
RAW_DESCRIPTORS = st.lists(
    st.tuples(
        st.integers(0, 15),
        st.one_of(st.integers(0, 0x250000), st.integers(0, (1 << 64) - 1)),
        st.one_of(st.integers(0, 5000), st.integers(0, (1 << 32) - 1)),
        st.integers(0, 7),
        st.integers(0, 20),
    ),
    max_size=4,
)
TX = st.tuples(st.just("tx"), TX_CHAINS)
RX_POST = st.tuples(st.just("rx post"), st.lists(st.one_of(st.integers(0, 30), st.integers(0, 4000)), min_size=1,
                                                 max_size=3))
RECEIVE = st.tuples(st.just("receive"), st.one_of(st.integers(0, 100), st.integers(0, 1600), st.integers(0, 10000)),
                    st.integers(0, 255))
PROCESS = st.tuples(st.just("process"), st.integers(0, 1))
OPS = st.one_of(  # the ordinary steps weighted up, so that frames do flow between the garbage
    TX, TX, RX_POST, RX_POST, RECEIVE, RECEIVE, PROCESS, PROCESS, PROCESS,
    st.tuples(st.just("room"), st.one_of(st.just(1 << 30), st.integers(-10, 1 << 16))),
    st.tuples(st.just("raw"), st.sampled_from(["rx", "tx"]), RAW_DESCRIPTORS, st.integers(0, 20)),
    st.tuples(st.just("garbage"), st.sampled_from(sorted(AREAS)), st.integers(0, 1 << 20), st.binary(max_size=48)),
)


def recording(queue: Virtqueue, completions: list[tuple[int, int]]) -> None:
    """Have ``queue`` note every chain the device completes."""
    add_used = queue.add_used

    def noted(head: int, written: int) -> None:
        completions.append((head, written))
        add_used(head, written)

    queue.add_used = noted  # type: ignore[method-assign]


@settings(max_examples=500, deadline=None)
@given(
    ops=st.lists(OPS, min_size=10, max_size=60).map(lambda ops: [*ops, ("process", 1), ("process", 0)]),
    features=st.sampled_from([ALL_FEATURES, ALL_FEATURES & ~n.VIRTIO_NET_F_MRG_RXBUF,
                              ALL_FEATURES & ~n.VIRTIO_NET_F_GUEST_CSUM]),
    mtu=st.sampled_from([68, 1500, 9000]),
    backlog=st.tuples(st.integers(1, 8), st.integers(1, 40000)),
)
def test_random_rings_and_frames_never_break_the_device(
    ops: list[tuple[Any, ...]], features: int, mtu: int, backlog: tuple[int, int]
) -> None:
    with GuestMemory(LAYOUT) as memory:
        rings = {"rx": Ring(memory, 0x10000, 16, 0x40000, 0x60000), "tx": Ring(memory, 0x20000, 16, 0x200000, 0x40000)}
        sent: list[bytes] = []
        room = [1 << 30]
        device = Net(MAC, lambda frames: sent.extend(map(bytes, frames)), lambda: room[0], mtu=mtu,
                     rx_backlog_frames=backlog[0], rx_backlog_bytes=backlog[1])
        device.activate([rings["rx"].queue, rings["tx"].queue], features)
        rx_done: list[tuple[int, int]] = []
        tx_done: list[tuple[int, int]] = []
        recording(rings["rx"].queue, rx_done)
        recording(rings["tx"].queue, tx_done)
        accepted = refused = 0
        for op in ops:
            kind = op[0]
            try:
                if kind == "tx":
                    head, frame, cuts, writable = op[1]
                    data = head + frame
                    points = sorted({min(cut, len(data)) for cut in cuts})
                    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
                    rings["tx"].post(pieces, writable)
                elif kind == "rx post":
                    rings["rx"].post(writable=op[1])
                elif kind == "receive":
                    if device.receive(bytes([op[2]]) * op[1]):
                        accepted += 1
                    else:
                        refused += 1
                elif kind == "process":
                    device.process_queue(op[1])
                elif kind == "room":
                    room[0] = op[1]
                elif kind == "raw":
                    ring = rings[op[1]]
                    for index, addr, length, flags, next_index in op[2]:
                        ring.driver.descriptor(index, addr, length, flags, next_index)
                    ring.driver.make_available(op[3])
                else:
                    start, size = AREAS[op[1]]
                    garbage = op[3][: max(0, size - op[2] % size)]
                    memory.write(start + op[2] % size, garbage)
            except VirtqueueError:
                return  # the transport fails the device here; until its reset nothing more runs
            # Every chain the device consumed it completed, once: none kept, none lost.
            assert len(rx_done) == rings["rx"].queue.next_avail and len(tx_done) == rings["tx"].queue.next_avail
            assert len(tx_done) == device.tx_frames + device.dropped_tx and all(w == 0 for _, w in tx_done)
            assert device.dropped_tx == device.dropped_tx_malformed + device.dropped_tx_gso
            assert len(sent) == device.tx_frames and sum(map(len, sent)) == device.tx_bytes
            assert all(n.ETH_HLEN <= len(frame) <= device.max_frame for frame in sent)
            assert accepted == device.rx_frames + device.dropped_rx_no_room + device.backlog_frames
            assert refused == device.dropped_rx_size + device.dropped_rx_backlog
            assert device.dropped_rx == refused + device.dropped_rx_no_room
            assert sum(written for _, written in rx_done) == device.rx_bytes + HDR.size * device.rx_frames
            assert len(rx_done) >= device.rx_frames + device.rx_buffers_unusable
            if not features & n.VIRTIO_NET_F_MRG_RXBUF:
                assert len(rx_done) == device.rx_frames + device.rx_buffers_unusable
            assert device.backlog_frames <= backlog[0] and (device.backlog_bytes == 0) == (device.backlog_frames == 0)


@settings(max_examples=300, deadline=None)
@given(
    frames=st.lists(st.one_of(st.binary(min_size=14, max_size=200), st.binary(min_size=1000, max_size=3018)),
                    max_size=10),
    buffers=st.lists(st.one_of(st.integers(0, 40), st.integers(26, 2500)), max_size=60),
    mergeable=st.booleans(),
)
def test_frames_arrive_intact_however_the_guest_sizes_its_buffers(
    frames: list[bytes], buffers: list[int], mergeable: bool
) -> None:
    with GuestMemory(LAYOUT) as memory:
        rx = Ring(memory, 0x10000, 16, 0x40000, 0x60000)
        device = Net(MAC, lambda frames: None, lambda: 0, mtu=3000)
        device.activate([rx.queue, Virtqueue(memory, 16)],
                        ALL_FEATURES if mergeable else ALL_FEATURES & ~n.VIRTIO_NET_F_MRG_RXBUF)
        done: list[tuple[int, int]] = []
        recording(rx.queue, done)
        capacity: dict[int, int] = {}
        for frame in frames:
            assert device.receive(frame)
        delivered: list[bytes] = []
        seen = 0
        while device.backlog_frames and buffers:
            free = 16 - (rx.driver.avail_idx - len(done))
            if free == 0:
                break  # the ring holds buffers the device can use for nothing waiting
            for size in buffers[:free]:
                capacity[rx.post(writable=[size])] = size
            buffers = buffers[free:]
            device.process_queue(n.RX_QUEUE)
            while seen < len(done):  # read each frame back before its buffers are posted again
                head, written = done[seen]
                seen += 1
                if written == 0:
                    assert capacity[head] < HDR.size + n.ETH_HLEN  # only a runt buffer comes back empty
                    continue
                flags, gso, _, _, _, _, count = HDR.unpack(rx.read_back(head, HDR.size))
                assert (flags, gso) == (n.VIRTIO_NET_HDR_F_DATA_VALID, 0) and (count == 1 or mergeable)
                parts = [rx.read_back(head, written)[HDR.size :]]
                for later, later_written in done[seen : seen + count - 1]:
                    parts.append(rx.read_back(later, later_written))
                chain_lengths = [written] + [w for _, w in done[seen : seen + count - 1]]
                heads = [head] + [h for h, _ in done[seen : seen + count - 1]]
                # Mergeable buffers are filled in turn: every one but the last is full.
                assert all(w == capacity[h] for h, w in zip(heads[:-1], chain_lengths[:-1], strict=True))
                seen += count - 1
                delivered.append(b"".join(parts))
        # Delivered in order, each whole; the others were too large for the buffers, or still wait.
        assert len(delivered) == device.rx_frames
        waiting = iter(frames)
        assert all(any(frame == candidate for candidate in waiting) for frame in delivered)
        assert device.rx_frames + device.dropped_rx_no_room + device.backlog_frames == len(frames)
