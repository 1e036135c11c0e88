"""One vsock stream connection, host side, as a sans-IO state machine (virtio 1.2, 5.10.6.3-6).

Packets from the guest go in through :meth:`receive` and come out as events;
what the host wants to do (connect, send, close) comes back as packets for the
guest. Sending respects the guest's credit: never more than it said it has room for.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .packet import MAX_PAYLOAD, VIRTIO_VSOCK_SHUTDOWN_RCV, VIRTIO_VSOCK_SHUTDOWN_SEND, VMADDR_CID_HOST, Op, Packet

DEFAULT_BUFFER = 256 * 1024
COUNTER_MODULUS = 1 << 32  # the wire counters (fwd_cnt) are u32 and wrap


class State(enum.Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    CLOSED = "closed"


@dataclass(frozen=True)
class Connected:
    """The handshake completed."""


@dataclass(frozen=True)
class Data:
    payload: bytes


@dataclass(frozen=True)
class PeerShutdown:
    """The guest will send no more (``send``) and/or receive no more (``receive``)."""

    send: bool
    receive: bool


@dataclass(frozen=True)
class Reset:
    """The connection was refused or reset by the guest."""


@dataclass(frozen=True)
class CreditUpdated:
    """The guest has made room: a sender waiting for credit may go on."""


Event = Connected | Data | PeerShutdown | Reset | CreditUpdated


class VsockConnection:
    """The host end (CID 2, ``host_port``) of a stream with guest ``guest_cid:guest_port``."""

    def __init__(self, host_port: int, guest_cid: int, guest_port: int, buffer_size: int = DEFAULT_BUFFER) -> None:
        self.host_port = host_port
        self.guest_cid = guest_cid
        self.guest_port = guest_port
        self.state = State.CLOSED
        self.buffer_size = buffer_size
        self._forwarded = 0  # bytes the host application has consumed (our fwd_cnt)
        self._forwarded_at_last_update = 0
        self._sent = 0  # bytes we have sent (tx_cnt)
        self._peer_buffer = 0
        self._peer_forwarded = 0
        self.peer_shut_send = False

    # -- packets for the guest -------------------------------------------------------

    def _packet(self, op: Op, flags: int = 0, payload: bytes = b"") -> Packet:
        self._forwarded_at_last_update = self._forwarded
        return Packet(
            VMADDR_CID_HOST, self.guest_cid, self.host_port, self.guest_port, op, flags,
            self.buffer_size, self._forwarded % COUNTER_MODULUS, payload,
        )

    def connect(self) -> Packet:
        """Open the connection from the host: a REQUEST for the guest."""
        self.state = State.CONNECTING
        return self._packet(Op.REQUEST)

    def accept(self, request: Packet) -> Packet:
        """Take a guest's REQUEST: the RESPONSE that completes the handshake."""
        self._update_credit(request)
        self.state = State.CONNECTED
        return self._packet(Op.RESPONSE)

    @property
    def send_credit(self) -> int:
        """How many bytes the guest has room for right now."""
        in_flight = (self._sent - self._peer_forwarded) % COUNTER_MODULUS
        return max(self._peer_buffer - in_flight, 0)

    def send(self, data: bytes) -> tuple[list[Packet], int]:
        """RW packets for as much of ``data`` as the guest's credit allows, and how much that was."""
        if self.state is not State.CONNECTED:
            return [], 0
        allowed = min(len(data), self.send_credit)
        packets = [
            self._packet(Op.RW, payload=data[offset : min(offset + MAX_PAYLOAD, allowed)])
            for offset in range(0, allowed, MAX_PAYLOAD)
        ]
        self._sent += allowed
        return packets, allowed

    def consumed(self, count: int) -> Packet | None:
        """The host read ``count`` bytes; tells the guest once half the buffer has freed up."""
        self._forwarded += count
        if self.state is State.CONNECTED and self._forwarded - self._forwarded_at_last_update >= self.buffer_size // 2:
            return self._packet(Op.CREDIT_UPDATE)
        return None

    def shutdown(self, *, send: bool, receive: bool) -> Packet:
        """The host will send (``send``) and/or receive (``receive``) no more."""
        flags = (VIRTIO_VSOCK_SHUTDOWN_SEND if send else 0) | (VIRTIO_VSOCK_SHUTDOWN_RCV if receive else 0)
        return self._packet(Op.SHUTDOWN, flags)

    def reset(self) -> Packet:
        self.state = State.CLOSED
        return self._packet(Op.RST)

    # -- packets from the guest ----------------------------------------------------------

    def receive(self, packet: Packet) -> tuple[list[Event], list[Packet]]:
        """Events for the host application, and any packets to answer the guest with."""
        if self.state is State.CLOSED:
            return [], ([] if packet.op is Op.RST else [self._packet(Op.RST)])
        self._update_credit(packet)
        if packet.op is Op.RST:
            self.state = State.CLOSED
            return [Reset()], []
        if self.state is State.CONNECTING:
            if packet.op is Op.RESPONSE:
                self.state = State.CONNECTED
                return [Connected()], []
            return [Reset()], [self.reset()]
        if packet.op is Op.RW:
            return [Data(bytes(packet.payload))], []  # from the guest: bytes already, not copied
        if packet.op is Op.CREDIT_REQUEST:
            return [], [self._packet(Op.CREDIT_UPDATE)]
        if packet.op is Op.SHUTDOWN:
            send = bool(packet.flags & VIRTIO_VSOCK_SHUTDOWN_SEND)
            receive = bool(packet.flags & VIRTIO_VSOCK_SHUTDOWN_RCV)
            self.peer_shut_send |= send
            return [PeerShutdown(send=send, receive=receive)], []
        if packet.op is Op.CREDIT_UPDATE:
            return [CreditUpdated()], []
        return [Reset()], [self.reset()]  # REQUEST/RESPONSE on an open connection: a protocol error

    def _update_credit(self, packet: Packet) -> None:
        self._peer_buffer = packet.buf_alloc
        self._peer_forwarded = packet.fwd_cnt
