"""The host's stream API over a real muxer, with guest packets handed in as the device would."""

from __future__ import annotations

import contextlib
import errno
import threading
from collections.abc import AsyncIterator

import anyio
import pytest

from asupermachine._core.vsock.host import LISTEN_BACKLOG, MuxInbox, VsockHost, VsockStream
from asupermachine._core.vsock.muxer import VsockMuxer
from asupermachine._core.vsock.packet import VMADDR_CID_HOST, Op, Packet
from asupermachine._errors import VsockConnectionReset

pytestmark = pytest.mark.anyio
GUEST = 3
HOST_PORT = 5000


def guest_packet(guest_port: int, op: Op, payload: bytes = b"") -> Packet:
    return Packet(GUEST, VMADDR_CID_HOST, guest_port, HOST_PORT, op, buf_alloc=1 << 16, payload=payload)


class Device:
    """What the vsock device does for its host side: posts the muxer's events, serves RX (here, nothing to do)."""

    def __init__(self) -> None:
        self.inbox = MuxInbox()
        self.host = VsockHost(VsockMuxer(GUEST), self.inbox, threading.Lock(), kick_rx=lambda: None)

    def from_guest(self, packet: Packet) -> None:
        self.inbox.post(self.host.muxer.from_guest(packet))


def new_host() -> tuple[VsockHost, Device]:
    device = Device()
    return device.host, device


@contextlib.asynccontextmanager
async def accepting(host: VsockHost, device: Device, *packets: Packet) -> AsyncIterator[VsockStream]:
    """The host serving its events and listening on HOST_PORT, and the stream it accepted for ``packets``."""
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(host.run)
        async with host.listen(HOST_PORT) as listener:
            for packet in packets:
                device.from_guest(packet)
            with anyio.fail_after(5):
                yield await listener.accept()
        tasks.cancel_scope.cancel()


async def test_a_listener_accepts_guest_connections_with_their_data() -> None:
    host, device = new_host()
    hello = [guest_packet(1234, Op.REQUEST), guest_packet(1234, Op.RW, b"hello")]
    async with accepting(host, device, *hello) as stream:
        assert await stream.receive() == b"hello"
        await stream.send(b"back")
        sent = [p for p in host.muxer.outbound if p.op is Op.RW]
        assert [(p.dst_port, p.payload) for p in sent] == [(1234, b"back")]
        await stream.aclose()
    host.close()


async def test_a_port_is_listened_on_once_and_refuses_after_the_listener_goes() -> None:
    host, device = new_host()
    async with host.listen(HOST_PORT):
        with pytest.raises(OSError) as taken:
            async with host.listen(HOST_PORT):
                pass
        assert taken.value.errno == errno.EADDRINUSE
    host.muxer.outbound.clear()
    device.from_guest(guest_packet(1234, Op.REQUEST))
    assert [p.op for p in host.muxer.outbound] == [Op.RST]
    host.close()


async def test_connections_beyond_the_backlog_and_unclaimed_ones_are_reset() -> None:
    host, device = new_host()
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(host.run)
        async with host.listen(HOST_PORT):
            for port in range(LISTEN_BACKLOG + 1):
                device.from_guest(guest_packet(port, Op.REQUEST))
            with anyio.fail_after(5):
                while len(host.muxer.connections) > LISTEN_BACKLOG:
                    await anyio.sleep(0.01)
        assert host.muxer.connections == {}  # the unclaimed backlog went with the listener
        tasks.cancel_scope.cancel()
    host.close()


async def test_sending_on_a_connection_the_guest_reset_raises_before_the_reset_is_dispatched() -> None:
    """The device thread has taken the guest's RST (the muxer forgot the connection); the loop has not yet."""
    host, device = new_host()
    async with accepting(host, device, guest_packet(1234, Op.REQUEST)) as stream:
        pass
    host.muxer.from_guest(guest_packet(1234, Op.RST))  # its event is never dispatched
    with pytest.raises(VsockConnectionReset):
        await stream.send(b"late")
    await stream.aclose()
    host.close()
