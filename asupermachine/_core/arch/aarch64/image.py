"""The arm64 Linux ``Image`` (Documentation/arch/arm64/booting.rst), and where it goes in guest RAM (sans-IO).

Distributions ship it compressed: Debian's ``vmlinuz`` is a gzip stream, and
kernels built with ``CONFIG_EFI_ZBOOT`` wrap a gzip or zstd payload in a PE
image (``MZ``, ``zimg``). :func:`arm64_kernel` takes any of these, or the
bare Image, and checks its 64-byte header:

====== ====== ===================================================
offset size   field
====== ====== ===================================================
0x08   8      ``text_offset``: load offset from a 2 MiB-aligned base
0x10   8      ``image_size``: bytes the kernel needs there (0: before Linux 3.17)
0x18   8      ``flags``: bit 0 big-endian, bits 1-2 page size, bit 3 placement
0x38   4      magic ``ARM\\x64``
====== ====== ===================================================
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import zstandard

from ...._errors import KernelImageError

HEADER = struct.Struct("<IIQQQQQQII")
MAGIC = 0x644D5241  # "ARM\x64"
LEGACY_TEXT_OFFSET = 0x80000
"""What ``text_offset`` is when ``image_size`` is 0 (kernels before 3.17)."""
FLAG_BIG_ENDIAN = 1 << 0
FLAG_PAGE_SIZE_SHIFT = 1
FLAG_ANYWHERE = 1 << 3
PAGE_SIZES = {0: None, 1: 4 << 10, 2: 16 << 10, 3: 64 << 10}
KERNEL_ALIGNMENT = 2 << 20
"""The Image goes ``text_offset`` above a 2 MiB-aligned address."""
DTB_MAX_SIZE = 2 << 20
"""The device tree must not exceed 2 MiB (booting.rst); it gets a 2 MiB region of its own."""
PAGE = 4096
MAX_IMAGE_SIZE = 512 << 20
"""Larger than any kernel: a decompression that would exceed it is refused, not carried out."""
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
ZBOOT = struct.Struct("<4s4sII8x")  # "MZ..", "zimg", payload offset, payload size, reserved; compression name


@dataclass(frozen=True)
class Arm64Kernel:
    """A checked, uncompressed arm64 Image."""

    image: bytes
    text_offset: int
    image_size: int
    """Bytes from the load address the kernel uses, its BSS included (for a pre-3.17 kernel, unknown:
    its file size, and the memory above it must be left free)."""
    page_size: int | None
    """The kernel's page size, if its header says (4, 16 or 64 KiB)."""
    anywhere: bool
    """Whether it may be placed anywhere in RAM (else as close as possible to RAM's start)."""


@dataclass(frozen=True)
class BootLayout:
    """Where a boot puts the kernel, the device tree and the initrd, by guest-physical address."""

    kernel: int
    """The Image's load address, and its entry point."""
    dtb: int
    initrd: int
    initrd_size: int


def arm64_kernel(data: bytes) -> Arm64Kernel:
    """The Image in ``data`` (bare, gzip, zstd, or an EFI zboot image of those), checked.

    :raises KernelImageError: for anything else, a truncated or damaged file, or a big-endian kernel
    """
    image = _uncompressed(data)
    if len(image) < HEADER.size:
        raise KernelImageError(f"an arm64 Image has a {HEADER.size}-byte header; this file has {len(image)} bytes")
    _, _, text_offset, image_size, flags, *_, magic, _ = HEADER.unpack_from(image)
    if magic != MAGIC:
        raise KernelImageError("not an arm64 Linux Image (no ARM\\x64 magic at offset 0x38)")
    if image_size == 0:  # before Linux 3.17: no size, and this fixed offset
        return Arm64Kernel(image, LEGACY_TEXT_OFFSET, len(image), None, False)
    if flags & FLAG_BIG_ENDIAN:
        raise KernelImageError("a big-endian arm64 kernel: KVM guests here run little-endian")
    if text_offset % PAGE or text_offset >= KERNEL_ALIGNMENT or image_size < len(image):
        raise KernelImageError(
            f"an arm64 Image header with text_offset {text_offset:#x} and image_size {image_size:#x} "
            f"for a {len(image)}-byte file is damaged"
        )
    page_size = PAGE_SIZES[(flags >> FLAG_PAGE_SIZE_SHIFT) & 3]
    return Arm64Kernel(image, text_offset, image_size, page_size, bool(flags & FLAG_ANYWHERE))


def boot_layout(kernel: Arm64Kernel, ram_base: int, ram_size: int, initrd_size: int) -> BootLayout:
    """Where ``kernel``, a device tree and an initrd of ``initrd_size`` bytes go in RAM as booting.rst asks.

    The kernel at the first 2 MiB boundary of RAM plus ``text_offset`` (as close to
    RAM's start as it can be), the device tree in the last 2 MiB, 8-byte aligned
    and alone in its 2 MiB region, and the initrd page-aligned just below it.

    :raises KernelImageError: if they do not fit in ``ram_size`` bytes
    """
    base = -(-ram_base // KERNEL_ALIGNMENT) * KERNEL_ALIGNMENT
    kernel_address = base + kernel.text_offset
    ram_end = ram_base + ram_size
    dtb = (ram_end - DTB_MAX_SIZE) // KERNEL_ALIGNMENT * KERNEL_ALIGNMENT
    initrd = (dtb - initrd_size) // PAGE * PAGE
    if initrd < kernel_address + kernel.image_size:
        raise KernelImageError(
            f"a kernel of {kernel.image_size >> 20} MiB, a {initrd_size >> 20} MiB initrd and the device tree "
            f"do not fit in {ram_size >> 20} MiB of RAM"
        )
    return BootLayout(kernel_address, dtb, initrd, initrd_size)


def _uncompressed(data: bytes) -> bytes:
    """``data`` as a bare Image: unwrapped from EFI zboot, decompressed from gzip or zstd."""
    if data[:2] == b"MZ" and data[4:8] == b"zimg":
        if len(data) < ZBOOT.size:
            raise KernelImageError("a truncated EFI zboot kernel image")
        _, _, offset, size = ZBOOT.unpack_from(data)
        if not ZBOOT.size <= offset <= offset + size <= len(data):
            raise KernelImageError(f"an EFI zboot kernel's payload ({size} bytes at {offset}) lies outside its file")
        data = data[offset : offset + size]
        if data[:2] != GZIP_MAGIC and data[:4] != ZSTD_MAGIC:
            raise KernelImageError("an EFI zboot kernel compressed other than with gzip or zstd")
    too_big = KernelImageError(f"the kernel image decompresses to more than {MAX_IMAGE_SIZE >> 20} MiB")
    try:
        if data[:2] == GZIP_MAGIC:
            inflate = zlib.decompressobj(wbits=31)  # gzip; what follows its stream is ignored
            image = inflate.decompress(data, MAX_IMAGE_SIZE + 1)
            if not inflate.eof and len(image) <= MAX_IMAGE_SIZE:
                raise KernelImageError("the gzip-compressed kernel image is truncated")
        elif data[:4] == ZSTD_MAGIC:
            declared = zstandard.get_frame_parameters(data).content_size
            if MAX_IMAGE_SIZE < declared != zstandard.CONTENTSIZE_UNKNOWN:  # trusted when given: refuse first
                raise too_big
            image = zstandard.ZstdDecompressor().decompress(data, max_output_size=MAX_IMAGE_SIZE)
        else:
            return data
    except (zlib.error, zstandard.ZstdError) as error:
        raise KernelImageError(f"the kernel image does not decompress: {error}") from None
    if len(image) > MAX_IMAGE_SIZE:
        raise too_big
    return image
