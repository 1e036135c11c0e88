"""The host's stream API over a real muxer, with guest packets handed in as the device would."""

from __future__ import annotations

import errno

import anyio
import pytest

from asupermachine._core.vsock.host import LISTEN_BACKLOG, VsockHost
from asupermachine._core.vsock.muxer import VsockMuxer
from asupermachine._core.vsock.packet import VMADDR_CID_HOST, Op, Packet

pytestmark = pytest.mark.anyio
GUEST = 3
HOST_PORT = 5000


def guest_packet(guest_port: int, op: Op, payload: bytes = b"") -> Packet:
    return Packet(GUEST, VMADDR_CID_HOST, guest_port, HOST_PORT, op, buf_alloc=1 << 16, payload=payload)


def from_guest(host: VsockHost, packet: Packet) -> None:
    host.post(host.muxer.from_guest(packet))


async def test_a_listener_accepts_guest_connections_with_their_data() -> None:
    host = VsockHost(VsockMuxer(GUEST))
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(host.run)
        async with host.listen(HOST_PORT) as listener:
            from_guest(host, guest_packet(1234, Op.REQUEST))
            from_guest(host, guest_packet(1234, Op.RW, b"hello"))
            with anyio.fail_after(5):
                stream = await listener.accept()
                assert await stream.receive() == b"hello"
            await stream.send(b"back")
            sent = [p for p in host.muxer.outbound if p.op is Op.RW]
            assert [(p.dst_port, p.payload) for p in sent] == [(1234, b"back")]
            await stream.aclose()
        tasks.cancel_scope.cancel()
    host.close()


async def test_a_port_is_listened_on_once_and_refuses_after_the_listener_goes() -> None:
    host = VsockHost(VsockMuxer(GUEST))
    async with host.listen(HOST_PORT):
        with pytest.raises(OSError) as taken:
            async with host.listen(HOST_PORT):
                pass
        assert taken.value.errno == errno.EADDRINUSE
    host.muxer.outbound.clear()
    from_guest(host, guest_packet(1234, Op.REQUEST))
    assert [p.op for p in host.muxer.outbound] == [Op.RST]
    host.close()


async def test_connections_beyond_the_backlog_and_unclaimed_ones_are_reset() -> None:
    host = VsockHost(VsockMuxer(GUEST))
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(host.run)
        async with host.listen(HOST_PORT):
            for port in range(LISTEN_BACKLOG + 1):
                from_guest(host, guest_packet(port, Op.REQUEST))
            with anyio.fail_after(5):
                while len(host.muxer.connections) > LISTEN_BACKLOG:
                    await anyio.sleep(0.01)
        assert host.muxer.connections == {}  # the unclaimed backlog went with the listener
        tasks.cancel_scope.cancel()
    host.close()
