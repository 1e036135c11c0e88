"""Whatever packets a guest sends, the host's vsock state stays sane (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from asupermachine._core.vsock.connection import State
from asupermachine._core.vsock.muxer import VsockMuxer
from asupermachine._core.vsock.packet import VMADDR_CID_HOST, Op, Packet

GUEST = 3
U32 = st.integers(0, (1 << 32) - 1)
PACKETS = st.builds(
    Packet,
    src_cid=st.sampled_from([GUEST, GUEST, 7]),
    dst_cid=st.sampled_from([VMADDR_CID_HOST, VMADDR_CID_HOST, 9]),
    src_port=st.sampled_from([5000, 5001]),
    dst_port=st.sampled_from([1024, 49152, 80]),
    op=st.sampled_from(list(Op)),
    flags=st.integers(0, 3),
    buf_alloc=U32,
    fwd_cnt=U32,
    payload=st.binary(max_size=64),
)


@settings(max_examples=400, deadline=None)
@given(packets=st.lists(PACKETS, max_size=40), sends=st.lists(st.binary(max_size=5000), max_size=5))
def test_random_guest_packets_never_break_the_muxer(packets: list[Packet], sends: list[bytes]) -> None:
    muxer = VsockMuxer(GUEST, buffer_size=4096)
    muxer.listening.add(1024)
    muxer.connect(5000)  # a host-opened connection in the mix, still connecting
    for packet in packets:
        muxer.from_guest(packet)
        for pair, connection in muxer.connections.items():
            credit = connection.send_credit
            for data in sends:
                sent = muxer.send(pair, data) if connection.state is State.CONNECTED else 0
                assert 0 <= sent <= min(len(data), credit)
                credit -= sent
    for packet in muxer.outbound:
        # Everything the host emits goes from the host to this guest, within one packet's limits.
        assert (packet.src_cid, packet.dst_cid) == (VMADDR_CID_HOST, GUEST)
        assert len(packet.payload) <= 64 * 1024
    # Closed connections are forgotten, never kept around to be routed to.
    assert all(connection.state is not State.CLOSED for connection in muxer.connections.values())
