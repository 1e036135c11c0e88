import pytest

from asupermachine._core.vsock.packet import HEADER, MAX_PAYLOAD, Op, Packet
from asupermachine._errors import VsockError


def test_header_round_trips_through_the_wire_format() -> None:
    packet = Packet(3, 2, 1234, 80, Op.RW, flags=0, buf_alloc=4096, fwd_cnt=17, payload=b"hello")
    header = packet.encode_header()
    assert len(header) == HEADER.size == 44
    assert Packet.decode(header, b"hello") == packet


@pytest.mark.parametrize(
    ("header", "payload", "match"),
    [
        (HEADER.pack(3, 2, 1, 2, 0, 2, 1, 0, 0, 0), b"", "type 2"),
        (HEADER.pack(3, 2, 1, 2, 5, 1, 5, 0, 0, 0), b"abc", "says 5"),
        (HEADER.pack(3, 2, 1, 2, 0, 1, 99, 0, 0, 0), b"", "operation 99"),
        (b"short", b"", "not 44"),
        (HEADER.pack(3, 2, 1, 2, MAX_PAYLOAD + 1, 1, 5, 0, 0, 0), bytes(MAX_PAYLOAD + 1), "says"),
    ],
)
def test_malformed_packets_raise_vsock_error(header: bytes, payload: bytes, match: str) -> None:
    with pytest.raises(VsockError, match=match):
        Packet.decode(header, payload)
