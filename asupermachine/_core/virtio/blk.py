"""virtio-blk (virtio 1.2, section 5.2) over a disk file, raw or copy-on-write.

Data moves between the file and guest memory through a :class:`DiskBackend` on
views of guest RAM, without intermediate copies. Every request's sector range is
checked against the disk's capacity; a read-only disk refuses writes.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

from ..._errors import DiskError
from .blk_backend import DiskBackend, Overlay, RawFile
from .blk_lock import lock_disk, unlock_disk
from .mmio import read_config_space
from .queue import Buffer, DescriptorChain, Virtqueue
from .request_queue import RequestQueueDevice

VIRTIO_ID_BLOCK = 2
VIRTIO_BLK_F_SEG_MAX = 1 << 2
VIRTIO_BLK_F_RO = 1 << 5
VIRTIO_BLK_F_FLUSH = 1 << 9
VIRTIO_BLK_T_IN = 0
VIRTIO_BLK_T_OUT = 1
VIRTIO_BLK_T_FLUSH = 4
VIRTIO_BLK_T_GET_ID = 8
VIRTIO_BLK_S_OK = 0
VIRTIO_BLK_S_IOERR = 1
VIRTIO_BLK_S_UNSUPP = 2
SECTOR_SIZE = 512
REQUEST_HEADER = struct.Struct("<IIQ")  # type, reserved, sector
VIRTIO_BLK_ID_BYTES = 20
QUEUE_SIZE = 128
# Data buffers per request: all the ring holds beside the header and status (with
# indirect descriptors a request takes one ring slot). Without VIRTIO_BLK_F_SEG_MAX
# Linux sends one segment per request: a page at a time.
SEGMENTS_PER_REQUEST = QUEUE_SIZE - 2


@dataclass(frozen=True)
class Disk:
    """A raw disk image for the guest; the i-th disk given is ``/dev/vd<a+i>``."""

    path: Path
    read_only: bool = True
    copy_on_write: bool = False
    """Writable by the guest, but into a private overlay dropped with the VM: the file never changes."""


class _Rejected(Exception):
    """A request the device answers with an error status instead of serving."""

    def __init__(self, status: int) -> None:
        self.status = status


class Block(RequestQueueDevice):
    """One request queue serving a raw image opened, and locked (see :mod:`.blk_lock`), for the VM's lifetime.

    A drive made empty (``disk=None``) has no sectors until a disk is put in it
    (:meth:`insert`), while the VM runs; its transport then tells the driver.

    ``holder`` is the VM's id, recorded while a writable disk is attached so that
    a refused second writer can be told who has it.
    """

    device_id = VIRTIO_ID_BLOCK
    queue_max_sizes = (QUEUE_SIZE,)
    blocking_io = True  # a read the page cache cannot serve waits for the disk

    def __init__(self, disk: Disk | None, holder: str = "") -> None:
        super().__init__()
        self._fd, self._file_read_only = -1, True
        self._backend: DiskBackend | None = None
        self.read_only = False
        self.capacity_sectors = 0
        self._serial = b""
        # Fixed once the driver binds: an empty drive is offered writable, and a read-only disk put in
        # it later is kept read-only here (its writes refused) and by the guest (mount_volume.h).
        self.device_features = VIRTIO_BLK_F_SEG_MAX | VIRTIO_BLK_F_FLUSH
        if disk is not None:
            self.insert(disk, holder)
            self.device_features |= VIRTIO_BLK_F_RO if disk.read_only else 0

    def insert(self, disk: Disk, holder: str = "") -> None:
        """Put ``disk`` in this empty drive (as a :class:`Disk` given at creation); raises :class:`DiskError`."""
        if self._fd >= 0:
            raise DiskError(f"the drive already holds {self._serial.decode(errors='replace')}")
        path = Path(disk.path)
        file_read_only = disk.read_only or disk.copy_on_write
        try:
            fd = os.open(path, (os.O_RDONLY if file_read_only else os.O_RDWR) | os.O_CLOEXEC)
        except OSError as error:
            raise DiskError(f"cannot open disk image {path}: {error.strerror}") from None
        size = os.fstat(fd).st_size
        try:
            if size % SECTOR_SIZE or not os.path.isfile(path):
                raise DiskError(f"disk image {path} is not a regular file of whole 512-byte sectors")
            lock_disk(fd, path, read_only=file_read_only, holder=holder)
            self._backend = self._open_backend(fd, disk, size)
        except BaseException:
            os.close(fd)
            raise
        self._fd, self._file_read_only = fd, file_read_only
        self.read_only = disk.read_only
        self.capacity_sectors = size // SECTOR_SIZE
        self._serial = path.name.encode()[:VIRTIO_BLK_ID_BYTES]

    @staticmethod
    def _open_backend(fd: int, disk: Disk, size: int) -> DiskBackend:
        if not disk.copy_on_write:
            return RawFile(fd)
        # Beside the base (not in /tmp, often RAM): the overlay grows as the guest writes.
        directory = Path(disk.path).parent
        try:
            return Overlay(fd, size, directory)
        except OSError as error:
            raise DiskError(f"cannot make a copy-on-write overlay in {directory}: {error.strerror}") from None

    def read_config(self, offset: int, size: int) -> int:
        # 5.2.4: capacity, size_max (not offered), seg_max.
        return read_config_space(struct.pack("<QII", self.capacity_sectors, 0, SEGMENTS_PER_REQUEST), offset, size)

    def handle(self, queue: Virtqueue, chain: DescriptorChain) -> int:
        """Serve one request; returns the bytes written into the guest's buffers (data + status)."""
        if not chain.readable or chain.readable[0].length < REQUEST_HEADER.size or not chain.writable:
            return 0  # no header or no status byte: nothing can be answered
        status_buffer = chain.writable[-1]
        kind, _, sector = REQUEST_HEADER.unpack(queue.memory.read(chain.readable[0].addr, REQUEST_HEADER.size))
        data_in = chain.writable[:-1] + ([Buffer(status_buffer.addr, status_buffer.length - 1)]
                                         if status_buffer.length > 1 else [])
        data_out = chain.readable[1:]
        written = 0
        try:
            if kind == VIRTIO_BLK_T_IN:
                written = self._transfer(queue, sector, data_in, write=False)
            elif kind == VIRTIO_BLK_T_OUT:
                if self.read_only:
                    raise _Rejected(VIRTIO_BLK_S_IOERR)
                self._transfer(queue, sector, data_out, write=True)
            elif kind == VIRTIO_BLK_T_FLUSH:
                if not self.read_only and self._backend is not None:
                    self._backend.flush()
            elif kind == VIRTIO_BLK_T_GET_ID:
                serial = self._serial.ljust(VIRTIO_BLK_ID_BYTES, b"\0")
                written = queue.scatter(DescriptorChain(chain.head, writable=data_in), serial)
            else:
                raise _Rejected(VIRTIO_BLK_S_UNSUPP)
            status = VIRTIO_BLK_S_OK
        except _Rejected as rejected:
            status = rejected.status
        except OSError:
            status = VIRTIO_BLK_S_IOERR
        queue.memory.write(status_buffer.addr + status_buffer.length - 1, bytes([status]))
        return written + 1

    def _transfer(self, queue: Virtqueue, sector: int, buffers: list[Buffer], *, write: bool) -> int:
        length = sum(buffer.length for buffer in buffers)
        if length % SECTOR_SIZE or sector + length // SECTOR_SIZE > self.capacity_sectors or self._backend is None:
            raise _Rejected(VIRTIO_BLK_S_IOERR)
        views = [queue.memory.view(buffer.addr, buffer.length) for buffer in buffers if buffer.length]
        try:
            offset = sector * SECTOR_SIZE
            done = self._backend.write(views, offset) if write else self._backend.read(views, offset)
        finally:
            for view in views:
                view.release()
        if done != length:
            raise _Rejected(VIRTIO_BLK_S_IOERR)
        return length

    def freeze(self, target_fd: int) -> None:
        """Copy the disk as the guest sees it into the empty file ``target_fd`` (the VM held still)."""
        assert self._backend is not None, "only a drive holding a disk is frozen"
        self._backend.freeze(target_fd)

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None
        if self._fd >= 0:
            unlock_disk(self._fd, read_only=self._file_read_only)
            os.close(self._fd)
            self._fd = -1
