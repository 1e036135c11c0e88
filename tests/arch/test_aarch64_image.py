"""The arm64 Image loader: its header, what distributions compress it with, and where it goes in RAM."""

import gzip
import struct
import sys
from pathlib import Path

import pytest
import zstandard

from asupermachine import KernelImageError
from asupermachine._core.arch.aarch64 import image as loader
from asupermachine._core.arch.aarch64.image import Arm64Kernel, arm64_kernel, boot_layout

sys.path.insert(0, str(Path(__file__).parents[2] / "scripts"))

from nested_kvm.arch import ARM64  # noqa: E402
from nested_kvm.kernel import fetch_kernel  # noqa: E402

MIB = 1 << 20


def image(*, text_offset: int = 0, image_size: int | None = None, flags: int = 0b1010, size: int = 64 << 10) -> bytes:
    """A bare Image of ``size`` bytes whose header says the rest (default: 4 KiB pages, anywhere)."""
    size_field = 2 * size if image_size is None else image_size
    header = loader.HEADER.pack(0x91005A4D, 0x14000000, text_offset, size_field, flags, 0, 0, 0, loader.MAGIC, 0x40)
    return header + bytes(range(256)) * ((size - len(header)) // 256) + b"\0" * ((size - len(header)) % 256)


def zboot(payload: bytes, method: bytes) -> bytes:
    """An EFI zboot image as CONFIG_EFI_ZBOOT lays one out: a PE stub around the compressed Image."""
    offset = 0x1000
    header = loader.ZBOOT.pack(b"MZ\0\0", b"zimg", offset, len(payload)) + method + b"\0"
    return header.ljust(offset, b"\0") + payload + struct.pack("<I", 12345)  # zstd22's appended size


@pytest.mark.parametrize(
    "wrap",
    [
        lambda data: data,
        gzip.compress,
        lambda data: zstandard.ZstdCompressor().compress(data),
        lambda data: gzip.compress(data) + b"trailing padding",
        lambda data: zboot(gzip.compress(data), b"gzip"),
        lambda data: zboot(zstandard.ZstdCompressor().compress(data), b"zstd22"),
    ],
    ids=["bare", "gzip", "zstd", "gzip-padded", "zboot-gzip", "zboot-zstd"],
)
def test_an_image_is_read_bare_or_as_distributions_compress_it(wrap: object) -> None:
    bare = image(text_offset=0x10000)
    kernel = arm64_kernel(wrap(bare))  # type: ignore[operator]
    assert kernel == Arm64Kernel(bare, 0x10000, 2 * len(bare), 4096, True)


def test_a_kernel_before_3_17_has_no_size_and_a_fixed_offset() -> None:
    bare = image(text_offset=0, image_size=0, flags=0)
    assert arm64_kernel(bare) == Arm64Kernel(bare, 0x80000, len(bare), None, False)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "64-byte header"),
        (image()[:63], "64-byte header"),
        (image().replace(struct.pack("<I", loader.MAGIC), b"ARMx"), "no ARM"),
        (b"\x7fELF" + bytes(100), "no ARM"),
        (image(flags=0b1011), "big-endian"),
        (image(text_offset=0x123), "damaged"),
        (image(text_offset=4 * MIB), "damaged"),
        (image(image_size=100), "damaged"),
        (gzip.compress(image())[:-20], "truncated"),
        (b"\x1f\x8b" + bytes(30), "does not decompress"),
        (zstandard.ZstdCompressor().compress(image())[:-20], "does not decompress"),
        (zboot(gzip.compress(image()), b"gzip")[:0x1010], "outside its file"),
        (zboot(b"lz4 data", b"lz4"), "other than with gzip or zstd"),
    ],
    ids=[
        "empty", "short", "magic", "elf", "big-endian", "unaligned-offset", "offset-past-2mib", "size-below-file",
        "truncated-gzip", "bad-gzip", "truncated-zstd", "zboot-truncated", "zboot-lz4",
    ],
)
def test_what_is_not_a_sound_little_endian_image_is_refused(data: bytes, reason: str) -> None:
    with pytest.raises(KernelImageError, match=reason):
        arm64_kernel(data)


@pytest.mark.parametrize("compress", [gzip.compress, lambda data: zstandard.ZstdCompressor().compress(data)])
def test_a_decompression_bomb_is_refused_before_it_fills_memory(
    compress: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loader, "MAX_IMAGE_SIZE", 1 * MIB)
    with pytest.raises(KernelImageError, match="more than 1 MiB"):
        arm64_kernel(compress(image() + bytes(2 * MIB)))  # type: ignore[operator]


def test_the_kernel_the_device_tree_and_the_initrd_are_placed_as_booting_rst_asks() -> None:
    kernel = arm64_kernel(image(text_offset=0x80000, size=8 * MIB))
    layout = boot_layout(kernel, 0x8000_0000 + 4096, 256 * MIB, 5 * MIB + 1)
    assert layout.kernel == 0x8020_0000 + 0x80000  # the first 2 MiB boundary in RAM, plus text_offset
    assert layout.dtb == 0x8000_0000 + 254 * MIB  # the last whole 2 MiB region: alone in it
    assert layout.initrd % 4096 == 0 and layout.initrd + layout.initrd_size <= layout.dtb
    assert layout.initrd >= layout.kernel + kernel.image_size
    with pytest.raises(KernelImageError, match="do not fit in 24 MiB"):
        boot_layout(kernel, 0x8000_0000, 24 * MIB, 10 * MIB)


def test_debian_s_own_arm64_kernel_is_read_and_placed() -> None:
    kernel = arm64_kernel(fetch_kernel(ARM64).image.read_bytes())  # downloaded once, then cached
    assert kernel.text_offset == 0 and kernel.image_size > len(kernel.image) > 16 * MIB
    assert (kernel.page_size, kernel.anywhere) == (4096, True)
    layout = boot_layout(kernel, 0x8000_0000, 256 * MIB, 16 * MIB)
    assert layout.kernel == 0x8000_0000 and layout.initrd >= layout.kernel + kernel.image_size
