"""Hand-made x86_64 ELF executables: tiny "kernels" for loader and vCPU tests."""

from __future__ import annotations

import struct


def elf_image(entry: int, segments: list[tuple[int, bytes, int]]) -> bytes:
    """A minimal ELF64 x86_64 executable with PT_LOAD segments ``(paddr, data, memsz)``."""
    phoff = 64
    data_offset = phoff + 56 * len(segments)
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    header = struct.pack("<16sHHIQQQIHHHHHH", ident, 2, 62, 1, entry, phoff, 0, 0, 64, 56, len(segments), 0, 0, 0)
    phdrs, blobs = b"", b""
    for paddr, data, memsz in segments:
        phdrs += struct.pack("<IIQQQQQQ", 1, 5, data_offset + len(blobs), paddr, paddr, len(data), memsz, 0x1000)
        blobs += data
    return header + phdrs + blobs


def code_kernel(code: bytes, entry: int = 0x100_0000) -> bytes:
    """A "kernel" that is just ``code``, entered in 64-bit mode at ``entry``."""
    return elf_image(entry, [(entry, code, len(code))])
