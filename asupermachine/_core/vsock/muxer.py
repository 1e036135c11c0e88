"""All host-side vsock state of one VM, sans-IO: connections by port pair, listeners, outbound packets."""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass

from .connection import DEFAULT_BUFFER, Event, Reset, State, VsockConnection
from .packet import VMADDR_CID_HOST, Op, Packet

# Host ports the VMM picks for connections it opens (the Linux ephemeral range).
EPHEMERAL_PORTS = range(49152, 65536)

PortPair = tuple[int, int]
"""``(host_port, guest_port)``: what names one connection."""


@dataclass(frozen=True)
class Accepted:
    """A guest connected to a listening host port."""


MuxEvent = Event | Accepted


class VsockMuxer:
    """Routes guest packets to connections and queues the packets the host owes the guest."""

    def __init__(self, guest_cid: int, buffer_size: int = DEFAULT_BUFFER) -> None:
        self.guest_cid = guest_cid
        self.buffer_size = buffer_size
        self.connections: dict[PortPair, VsockConnection] = {}
        self.listening: set[int] = set()
        self.outbound: deque[Packet] = deque()
        self._ports = itertools.cycle(EPHEMERAL_PORTS)

    # -- host side -----------------------------------------------------------------------

    def connect(self, guest_port: int) -> PortPair:
        """Start a connection to the guest's ``guest_port``; events follow under the returned pair."""
        for _ in EPHEMERAL_PORTS:
            host_port = next(self._ports)
            if (host_port, guest_port) not in self.connections and host_port not in self.listening:
                break
        else:
            raise OSError("every ephemeral vsock port is in use")
        connection = VsockConnection(host_port, self.guest_cid, guest_port, self.buffer_size)
        self.connections[(host_port, guest_port)] = connection
        self.outbound.append(connection.connect())
        return (host_port, guest_port)

    def send(self, pair: PortPair, data: bytes) -> int:
        """Queue as much of ``data`` as the guest has credit for; returns how much."""
        packets, sent = self.connections[pair].send(data)
        self.outbound.extend(packets)
        return sent

    def consumed(self, pair: PortPair, count: int) -> None:
        update = self.connections[pair].consumed(count)
        if update is not None:
            self.outbound.append(update)

    def shutdown_send(self, pair: PortPair) -> None:
        """The host has sent all it will: the guest reads end-of-file after the data."""
        self.outbound.append(self.connections[pair].shutdown(send=True, receive=False))

    def close(self, pair: PortPair) -> None:
        """Reset the connection and forget it (the guest sees the peer go away)."""
        connection = self.connections.pop(pair, None)
        if connection is not None and connection.state is not State.CLOSED:
            self.outbound.append(connection.reset())

    # -- guest side ------------------------------------------------------------------------

    def from_guest(self, packet: Packet) -> list[tuple[PortPair, MuxEvent]]:
        """Take one packet the guest sent; returns what happened, by connection."""
        if packet.src_cid != self.guest_cid or packet.dst_cid != VMADDR_CID_HOST:
            return []  # not from this guest to the host: dropped, as a NIC drops a bad frame
        pair = (packet.dst_port, packet.src_port)
        connection = self.connections.get(pair)
        if connection is None:
            if packet.op is Op.REQUEST and packet.dst_port in self.listening:
                connection = VsockConnection(packet.dst_port, self.guest_cid, packet.src_port, self.buffer_size)
                self.connections[pair] = connection
                self.outbound.append(connection.accept(packet))
                return [(pair, Accepted())]
            if packet.op is not Op.RST:
                refusal = VsockConnection(packet.dst_port, self.guest_cid, packet.src_port).reset()
                self.outbound.append(refusal)
            return []
        events, replies = connection.receive(packet)
        self.outbound.extend(replies)
        if connection.state is State.CLOSED:
            del self.connections[pair]
        return [(pair, event) for event in events]

    def reset_all(self) -> list[tuple[PortPair, MuxEvent]]:
        """The transport went away (device reset): every connection is reset."""
        pairs = list(self.connections)
        self.connections.clear()
        self.outbound.clear()
        return [(pair, Reset()) for pair in pairs]
