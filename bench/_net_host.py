"""The host's side of bench/net.py: sinks, senders and clients on the host's loopback, on the host clock.

It runs in a process of its own, so that neither peer's VMM shares an
interpreter with it (ours runs in the benchmark's process). The guest leads:
it sends into the egress sink, then announces each further phase on the
control port with one line, ``echo WORD | nc HOST PORT``; the host does its part
of that phase and then closes the control connection, which lets the guest go on.
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection

CHUNK = 64 << 10
"""Bytes per write, the guest's ``dd bs=64k``."""
PHASE_TIMEOUT = 900.0
"""Seconds any one accept, connect or read may take (software KVM is slow)."""
HTTP_REQUEST = b"GET / HTTP/1.0\r\n\r\n"
BLOB_REQUEST = b"GET /blob HTTP/1.0\r\n\r\n"


@dataclass(frozen=True)
class Plan:
    """What the host does: bytes each way, connections to open, and the host ports published to the guest."""

    blocks: int
    """64 KiB blocks moved in each throughput phase."""
    connections: int
    ingress_port: int
    """Host port published to the guest's ``nc -l`` sink."""
    http_port: int
    """Host port published to the guest's ``httpd``."""


@dataclass(frozen=True)
class HostResults:
    """Seconds each phase took on the host clock, and what the guest reported."""

    egress: float
    ingress: float
    send: float
    connections: float


@contextmanager
def _listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(PHASE_TIMEOUT)
        yield server


def _receive_all(stream: socket.socket) -> tuple[int, float]:
    """Bytes read until end-of-file, and seconds from the first byte to it."""
    buffer = bytearray(1 << 20)
    received = stream.recv_into(buffer)
    start = time.perf_counter()
    while count := stream.recv_into(buffer):
        received += count
    return received, time.perf_counter() - start


def _announced(control: socket.socket, expected: str) -> tuple[socket.socket, str]:
    """The next control connection, once its line is read: (the connection, what follows ``expected:``)."""
    connection, _ = control.accept()
    connection.settimeout(PHASE_TIMEOUT)
    line = b""
    while not line.endswith(b"\n") and (chunk := connection.recv(256)):
        line += chunk
    word, _, value = line.decode().strip().partition(":")
    if word != expected:
        connection.close()
        raise RuntimeError(f"the guest announced {line!r}, not {expected!r}")
    return connection, value


def _connect(port: int) -> socket.socket:
    stream = socket.create_connection(("127.0.0.1", port), timeout=PHASE_TIMEOUT)
    stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return stream


def _ingress(plan: Plan) -> float:
    """Seconds from connecting to the guest sink's answer, the count of bytes it read (checked)."""
    chunk = bytes(CHUNK)
    start = time.perf_counter()
    with _connect(plan.ingress_port) as stream:
        for _ in range(plan.blocks):
            stream.sendall(chunk)
        stream.shutdown(socket.SHUT_WR)
        answer = b""
        while not answer.endswith(b"\n") and (part := stream.recv(64)):
            answer += part
        elapsed = time.perf_counter() - start
    if answer.strip() != str(plan.blocks * CHUNK).encode():
        raise RuntimeError(f"the guest's sink counted {answer!r}, not {plan.blocks * CHUNK} bytes")
    return elapsed


def _send(plan: Plan) -> float:
    """Seconds from the first byte to the end of ``/blob`` downloaded from the guest's httpd (headers included)."""
    with _connect(plan.http_port) as stream:
        stream.sendall(BLOB_REQUEST)
        received, elapsed = _receive_all(stream)
    if received < plan.blocks * CHUNK:
        raise RuntimeError(f"the guest sent {received} bytes through the published port, not {plan.blocks * CHUNK}")
    return elapsed


def _connections(plan: Plan) -> float:
    """Seconds for ``plan.connections`` sequential HTTP/1.0 GETs, each on a new connection."""
    start = time.perf_counter()
    for _ in range(plan.connections):
        with _connect(plan.http_port) as stream:
            stream.sendall(HTTP_REQUEST)
            response = b""
            while chunk := stream.recv(4096):
                response += chunk
        if not response.startswith(b"HTTP/1.") or b" 200 " not in response.split(b"\r\n")[0]:
            raise RuntimeError(f"the guest's httpd answered {response[:200]!r}")
    return time.perf_counter() - start


def _progress(what: str, seconds: float) -> None:
    print(f"  host side: {what} in {seconds:.2f} s", file=sys.stderr, flush=True)


def _phases(plan: Plan, control: socket.socket, sink: socket.socket) -> HostResults:
    stream, _ = sink.accept()
    with stream:
        stream.settimeout(PHASE_TIMEOUT)
        received, egress = _receive_all(stream)
    if received != plan.blocks * CHUNK:
        raise RuntimeError(f"the guest sent {received} bytes to the egress sink, not {plan.blocks * CHUNK}")
    _progress("egress", egress)
    connection, _ = _announced(control, "ingress")
    with connection:
        ingress = _ingress(plan)
    _progress("ingress", ingress)
    connection, _ = _announced(control, "send")
    with connection:
        send = _send(plan)
    _progress("send through the published port", send)
    connection, _ = _announced(control, "connect")
    with connection:
        connections = _connections(plan)
    _progress(f"{plan.connections} connections", connections)
    connection, _ = _announced(control, "done")
    connection.close()
    return HostResults(egress, ingress, send, connections)


def drive(plan: Plan, results: Connection) -> None:
    """Send (control port, egress sink port), then, once the guest is done, :class:`HostResults` or the error."""
    try:
        with _listener() as control, _listener() as sink:
            results.send((control.getsockname()[1], sink.getsockname()[1]))
            results.send(_phases(plan, control, sink))
    except Exception as error:  # noqa: BLE001 - handed to the benchmark, which reports it with the guest's output
        results.send(f"{type(error).__name__}: {error}")
