import pytest

from asupermachine import KernelImageError
from asupermachine._core.arch.x86_64.elf import load_vmlinux, load_vmlinux_bytes
from asupermachine._core.memory import GuestMemory
from tests.support.elf_images import elf_image


@pytest.fixture
def memory() -> GuestMemory:
    with GuestMemory([(0, 4 << 20)]) as memory:
        yield memory


def test_segments_are_copied_and_bss_zeroed(memory: GuestMemory) -> None:
    memory.write(0x200004, b"\xff" * 12)
    loaded = load_vmlinux_bytes(elf_image(0x200000, [(0x200000, b"code", 16)]), memory)
    assert loaded.entry == 0x200000 and loaded.end == 0x200010
    assert memory.read(0x200000, 16) == b"code" + bytes(12)


def test_not_an_elf_file_is_refused(memory: GuestMemory) -> None:
    with pytest.raises(KernelImageError, match="not an ELF"):
        load_vmlinux_bytes(b"#!/bin/sh\necho not a kernel\n", memory)


def test_a_bzimage_is_refused_with_advice(memory: GuestMemory) -> None:
    image = bytearray(0x400)
    image[0x202:0x206] = b"HdrS"
    with pytest.raises(KernelImageError, match="bzImage"):
        load_vmlinux_bytes(bytes(image), memory)


def test_truncated_kernel_is_refused(memory: GuestMemory) -> None:
    image = elf_image(0x200000, [(0x200000, b"x" * 4096, 4096)])
    with pytest.raises(KernelImageError, match="truncated"):
        load_vmlinux_bytes(image[:-100], memory)
    with pytest.raises(KernelImageError, match="truncated"):
        load_vmlinux_bytes(image[:80], memory)


def test_segment_outside_guest_ram_is_refused(memory: GuestMemory) -> None:
    with pytest.raises(KernelImageError, match="does not fit"):
        load_vmlinux_bytes(elf_image(0x200000, [(0xFFFF_0000, b"x", 1 << 20)]), memory)


def test_missing_kernel_file_is_refused(memory: GuestMemory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(KernelImageError, match="does not exist"):
        load_vmlinux(tmp_path / "vmlinux", memory)


def test_a_kernel_file_loads_as_its_image_does(memory: GuestMemory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    image = elf_image(0x200000, [(0x200000, b"code" * 1000, 8192), (0x300000, b"data", 4)])
    (tmp_path / "vmlinux").write_bytes(image)
    memory.write(0x200000 + 4000, b"\xff" * 100)  # bss over dirty memory is cleared
    loaded = load_vmlinux(tmp_path / "vmlinux", memory)
    assert (loaded.entry, loaded.end) == (0x200000, 0x300004)
    assert memory.read(0x200000, 8192) == b"code" * 1000 + bytes(4192)
    assert memory.read(0x300000, 4) == b"data"
    with pytest.raises(KernelImageError, match="truncated"):
        (tmp_path / "short").write_bytes(image[:-2])
        load_vmlinux(tmp_path / "short", memory)
    with pytest.raises(KernelImageError, match="directory"):
        load_vmlinux(tmp_path, memory)
