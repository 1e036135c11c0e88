from asupermachine._core.vsock.connection import Connected, Data, PeerShutdown, Reset, State, VsockConnection
from asupermachine._core.vsock.packet import VIRTIO_VSOCK_SHUTDOWN_SEND, Op, Packet

GUEST = 3


def from_guest(op: Op, *, buf_alloc: int = 1000, fwd_cnt: int = 0, flags: int = 0, payload: bytes = b"") -> Packet:
    return Packet(GUEST, 2, 5000, 1024, op, flags, buf_alloc, fwd_cnt, payload)


def connected(buf_alloc: int = 1000) -> VsockConnection:
    connection = VsockConnection(1024, GUEST, 5000, buffer_size=100)
    request = connection.connect()
    assert (request.op, request.dst_cid, request.dst_port, request.src_cid) == (Op.REQUEST, GUEST, 5000, 2)
    events, replies = connection.receive(from_guest(Op.RESPONSE, buf_alloc=buf_alloc))
    assert events == [Connected()] and replies == []
    return connection


def test_host_connect_completes_on_response() -> None:
    assert connected().state is State.CONNECTED


def test_guest_refusal_is_a_reset() -> None:
    connection = VsockConnection(1024, GUEST, 5000)
    connection.connect()
    assert connection.receive(from_guest(Op.RST)) == ([Reset()], [])
    assert connection.state is State.CLOSED


def test_sending_never_exceeds_the_guests_credit() -> None:
    connection = connected(buf_alloc=10)
    packets, sent = connection.send(b"0123456789abcdef")
    assert sent == 10 and b"".join(p.payload for p in packets) == b"0123456789"
    assert connection.send(b"more") == ([], 0)
    # The guest consumed 6 bytes and says so: 6 more may go.
    connection.receive(from_guest(Op.CREDIT_UPDATE, buf_alloc=10, fwd_cnt=6))
    packets, sent = connection.send(b"abcdefgh")
    assert sent == 6


def test_large_sends_are_split_into_64k_packets() -> None:
    connection = connected(buf_alloc=1 << 20)
    packets, sent = connection.send(bytes(150_000))
    assert sent == 150_000 and [len(p.payload) for p in packets] == [65536, 65536, 18928]


def test_data_and_shutdown_from_the_guest_become_events() -> None:
    connection = connected()
    assert connection.receive(from_guest(Op.RW, payload=b"hi")) == ([Data(b"hi")], [])
    events, _ = connection.receive(from_guest(Op.SHUTDOWN, flags=2))
    assert events == [PeerShutdown(send=True, receive=False)] and connection.peer_shut_send


def test_reading_half_the_buffer_sends_a_credit_update() -> None:
    connection = connected()
    assert connection.consumed(30) is None
    update = connection.consumed(30)
    assert update is not None and update.op is Op.CREDIT_UPDATE and update.fwd_cnt == 60 and update.buf_alloc == 100
    assert connection.consumed(10) is None


def test_credit_request_is_answered() -> None:
    connection = connected()
    _, replies = connection.receive(from_guest(Op.CREDIT_REQUEST))
    assert [p.op for p in replies] == [Op.CREDIT_UPDATE]


def test_packets_for_a_closed_connection_are_answered_with_reset() -> None:
    connection = VsockConnection(1024, GUEST, 5000)
    assert [p.op for p in connection.receive(from_guest(Op.RW, payload=b"x"))[1]] == [Op.RST]
    assert connection.receive(from_guest(Op.RST)) == ([], [])


def test_a_second_request_on_an_open_connection_resets_it() -> None:
    connection = connected()
    events, replies = connection.receive(from_guest(Op.REQUEST))
    assert events == [Reset()] and [p.op for p in replies] == [Op.RST] and connection.state is State.CLOSED


def test_counters_wrap_at_32_bits() -> None:
    connection = connected(buf_alloc=100)
    connection._sent = (1 << 32) - 10
    connection.receive(from_guest(Op.CREDIT_UPDATE, buf_alloc=100, fwd_cnt=(1 << 32) - 10))
    assert connection.send_credit == 100
    connection.send(bytes(40))
    connection.receive(from_guest(Op.CREDIT_UPDATE, buf_alloc=100, fwd_cnt=30))  # wrapped
    assert connection.send_credit == 100


def test_half_close_says_send_only() -> None:
    packet = connected().shutdown(send=True, receive=False)
    assert packet.op is Op.SHUTDOWN and packet.flags == VIRTIO_VSOCK_SHUTDOWN_SEND
