"""virtio-vsock packets (virtio 1.2, section 5.10.6): the header codec, sans-IO."""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from ..._errors import VsockError

VIRTIO_ID_VSOCK = 19
VMADDR_CID_HOST = 2
# struct virtio_vsock_hdr: src_cid, dst_cid, src_port, dst_port, len, type, op, flags, buf_alloc, fwd_cnt
HEADER = struct.Struct("<QQIIIHHIII")
VIRTIO_VSOCK_TYPE_STREAM = 1
VIRTIO_VSOCK_SHUTDOWN_RCV = 1
VIRTIO_VSOCK_SHUTDOWN_SEND = 2
# Linux never puts more than 64 KiB in one packet (VIRTIO_VSOCK_MAX_PKT_BUF_SIZE).
MAX_PAYLOAD = 64 * 1024


class Op(enum.IntEnum):
    """``enum virtio_vsock_op``."""

    INVALID = 0
    REQUEST = 1
    RESPONSE = 2
    RST = 3
    SHUTDOWN = 4
    RW = 5
    CREDIT_UPDATE = 6
    CREDIT_REQUEST = 7


@dataclass(frozen=True)
class Packet:
    src_cid: int
    dst_cid: int
    src_port: int
    dst_port: int
    op: Op
    flags: int = 0
    buf_alloc: int = 0
    fwd_cnt: int = 0
    payload: bytes | memoryview = b""
    """bytes from the guest; toward it, a view of the rest of a packet split across receive buffers."""

    def encode_header(self) -> bytes:
        return HEADER.pack(
            self.src_cid, self.dst_cid, self.src_port, self.dst_port, len(self.payload),
            VIRTIO_VSOCK_TYPE_STREAM, self.op, self.flags, self.buf_alloc, self.fwd_cnt,
        )

    @classmethod
    def decode(cls, header: bytes, payload: bytes = b"") -> Packet:
        """A packet from the guest; raises :class:`VsockError` for anything we do not speak."""
        if len(header) != HEADER.size:
            raise VsockError(f"vsock header is {len(header)} bytes, not {HEADER.size}")
        src_cid, dst_cid, src_port, dst_port, length, kind, op, flags, buf_alloc, fwd_cnt = HEADER.unpack(header)
        if kind != VIRTIO_VSOCK_TYPE_STREAM:
            raise VsockError(f"vsock socket type {kind} is not supported (only stream)")
        if length != len(payload) or length > MAX_PAYLOAD:
            raise VsockError(f"vsock header says {length} payload bytes, the packet carries {len(payload)}")
        try:
            operation = Op(op)
        except ValueError:
            raise VsockError(f"unknown vsock operation {op}") from None
        return cls(src_cid, dst_cid, src_port, dst_port, operation, flags, buf_alloc, fwd_cnt, payload)
