import errno
import os
from pathlib import Path

import pytest

from asupermachine import Disk, DiskError
from asupermachine._core.memory import GuestMemory
from asupermachine._core.virtio import blk as b
from asupermachine._core.virtio.blk import Block
from asupermachine._core.virtio.queue import VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE
from asupermachine.testing import VirtqueueDriver as Driver

DATA = Driver.DATA

HEADER, PAYLOAD, STATUS = DATA, DATA + 0x100, DATA + 0x8000


def request(driver: Driver, kind: int, sector: int, payload: bytes = b"", read_len: int = 0) -> None:
    """Lay out header, data and status descriptors as Linux does and make them available."""
    driver.memory.write(HEADER, b.REQUEST_HEADER.pack(kind, 0, sector))
    descriptors = [(HEADER, b.REQUEST_HEADER.size, 0)]
    if payload:
        driver.memory.write(PAYLOAD, payload)
        descriptors.append((PAYLOAD, len(payload), 0))
    if read_len:
        descriptors.append((PAYLOAD, read_len, VIRTQ_DESC_F_WRITE))
    descriptors.append((STATUS, 1, VIRTQ_DESC_F_WRITE))
    for i, (addr, length, flags) in enumerate(descriptors):
        last = i == len(descriptors) - 1
        driver.descriptor(i, addr, length, flags | (0 if last else VIRTQ_DESC_F_NEXT), i + 1)
    driver.memory.write(STATUS, b"\xff")
    driver.make_available(0)


def serve(device: Block, driver: Driver) -> int:
    assert device.process_queue(0)
    return driver.memory.read(STATUS, 1)[0]


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(range(256)) * 16)  # 8 sectors
    return path


def make(image: Path, read_only: bool) -> tuple[Block, Driver, GuestMemory]:
    memory = GuestMemory([(0, 1 << 20)])
    driver = Driver(memory)
    device = Block(Disk(image, read_only=read_only))
    device.activate([driver.queue], 0)
    return device, driver, memory


def test_capacity_and_read_only_feature(image: Path) -> None:
    device, _, memory = make(image, read_only=True)
    assert device.read_config(0, 8) == 8 and device.device_features & b.VIRTIO_BLK_F_RO
    device.close()
    memory.close()


def test_reads_land_in_guest_memory(image: Path) -> None:
    device, driver, memory = make(image, read_only=True)
    request(driver, b.VIRTIO_BLK_T_IN, 1, read_len=1024)
    assert serve(device, driver) == b.VIRTIO_BLK_S_OK
    assert memory.read(PAYLOAD, 1024) == image.read_bytes()[512:1536]
    assert driver.used()[-1] == (0, 1025)
    device.close()
    memory.close()


def test_writes_reach_the_file_and_flush_succeeds(image: Path) -> None:
    device, driver, memory = make(image, read_only=False)
    request(driver, b.VIRTIO_BLK_T_OUT, 2, payload=b"w" * 512)
    assert serve(device, driver) == b.VIRTIO_BLK_S_OK
    request(driver, b.VIRTIO_BLK_T_FLUSH, 0)
    assert serve(device, driver) == b.VIRTIO_BLK_S_OK
    device.close()
    memory.close()
    assert image.read_bytes()[1024:1536] == b"w" * 512


@pytest.mark.parametrize(
    ("kind", "sector", "payload", "read_len", "status"),
    [
        (b.VIRTIO_BLK_T_OUT, 0, b"x" * 512, 0, b.VIRTIO_BLK_S_IOERR),  # read-only disk
        (b.VIRTIO_BLK_T_IN, 7, b"", 1024, b.VIRTIO_BLK_S_IOERR),  # runs past the end
        (b.VIRTIO_BLK_T_IN, 1 << 60, b"", 512, b.VIRTIO_BLK_S_IOERR),  # far past the end
        (b.VIRTIO_BLK_T_IN, 0, b"", 100, b.VIRTIO_BLK_S_IOERR),  # not whole sectors
        (99, 0, b"", 0, b.VIRTIO_BLK_S_UNSUPP),
    ],
)
def test_bad_requests_get_an_error_status_and_leave_the_file_alone(
    image: Path, kind: int, sector: int, payload: bytes, read_len: int, status: int
) -> None:
    before = image.read_bytes()
    device, driver, memory = make(image, read_only=True)
    request(driver, kind, sector, payload=payload, read_len=read_len)
    assert serve(device, driver) == status
    device.close()
    memory.close()
    assert image.read_bytes() == before


def test_an_empty_drive_has_no_sectors_until_a_disk_is_put_in_it(image: Path) -> None:
    with GuestMemory([(0, 1 << 20)]) as memory:
        driver = Driver(memory)
        device = Block(None)
        device.activate([driver.queue], 0)
        assert device.read_config(0, 8) == 0 and not device.device_features & b.VIRTIO_BLK_F_RO
        for kind, read_len in ((b.VIRTIO_BLK_T_IN, 512), (b.VIRTIO_BLK_T_FLUSH, 0)):
            request(driver, kind, 0, read_len=read_len)
            assert serve(device, driver) == (b.VIRTIO_BLK_S_IOERR if read_len else b.VIRTIO_BLK_S_OK)
        device.insert(Disk(image, read_only=True), holder="vm1")
        # Offered writable when the driver bound, it stays so; the read-only disk's writes are refused here.
        assert device.read_config(0, 8) == 8 and not device.device_features & b.VIRTIO_BLK_F_RO
        request(driver, b.VIRTIO_BLK_T_IN, 1, read_len=512)
        assert serve(device, driver) == b.VIRTIO_BLK_S_OK
        assert memory.read(PAYLOAD, 512) == image.read_bytes()[512:1024]
        request(driver, b.VIRTIO_BLK_T_OUT, 0, payload=b"x" * 512)
        assert serve(device, driver) == b.VIRTIO_BLK_S_IOERR
        with pytest.raises(DiskError, match="already holds disk.img"):
            device.insert(Disk(image, read_only=True))
        device.close()


def test_get_id_returns_the_image_name(image: Path) -> None:
    device, driver, memory = make(image, read_only=True)
    request(driver, b.VIRTIO_BLK_T_GET_ID, 0, read_len=20)
    assert serve(device, driver) == b.VIRTIO_BLK_S_OK
    assert memory.read(PAYLOAD, 20).rstrip(b"\0") == b"disk.img"
    device.close()
    memory.close()


def test_unusable_images_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DiskError, match="cannot open"):
        Block(Disk(tmp_path / "missing.img"))
    odd = tmp_path / "odd.img"
    odd.write_bytes(b"x" * 100)
    with pytest.raises(DiskError, match="512-byte sectors"):
        Block(Disk(odd))


def test_copy_on_write_disks_share_the_file_read_their_own_writes_and_never_change_it(image: Path) -> None:
    before = image.read_bytes()
    disk = Disk(image, read_only=False, copy_on_write=True)
    memories = [GuestMemory([(0, 1 << 20)]) for _ in range(2)]
    drivers = [Driver(memory) for memory in memories]
    devices = [Block(disk) for _ in drivers]  # both lock the file shared
    for device, driver in zip(devices, drivers, strict=True):
        device.activate([driver.queue], 0)
    assert not devices[0].device_features & b.VIRTIO_BLK_F_RO
    request(drivers[0], b.VIRTIO_BLK_T_OUT, 2, payload=b"w" * 512)
    assert serve(devices[0], drivers[0]) == b.VIRTIO_BLK_S_OK
    request(drivers[0], b.VIRTIO_BLK_T_FLUSH, 0)
    assert serve(devices[0], drivers[0]) == b.VIRTIO_BLK_S_OK
    request(drivers[0], b.VIRTIO_BLK_T_IN, 1, read_len=1536)
    assert serve(devices[0], drivers[0]) == b.VIRTIO_BLK_S_OK
    assert memories[0].read(PAYLOAD, 1536) == before[512:1024] + b"w" * 512 + before[1536:2048]
    request(drivers[1], b.VIRTIO_BLK_T_IN, 2, read_len=512)
    assert serve(devices[1], drivers[1]) == b.VIRTIO_BLK_S_OK
    assert memories[1].read(PAYLOAD, 512) == before[1024:1536]
    for device, memory in zip(devices, memories, strict=True):
        device.close()
        memory.close()
    assert image.read_bytes() == before


def test_a_copy_on_write_disk_whose_directory_takes_no_overlay_is_refused(
    image: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def read_only_filesystem(*_: object) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(b, "Overlay", read_only_filesystem)
    with pytest.raises(DiskError, match="copy-on-write overlay in .*: Read-only file system"):
        Block(Disk(image, read_only=False, copy_on_write=True))
