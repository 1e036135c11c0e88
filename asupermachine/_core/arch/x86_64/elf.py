"""Load an uncompressed x86_64 ``vmlinux`` ELF into guest memory.

We enter the kernel at the ELF entry point, ``startup_64``: the same 64-bit
entry the bzImage decompressor jumps to, so the slow (emulated, here) xz
decompression never runs and the VMM builds the long-mode state itself.
"""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ...._errors import GuestMemoryError, KernelImageError
from ...memory import GuestMemory

_ELF_MAGIC = b"\x7fELF"
_ELFCLASS64 = 2
_ELFDATA2LSB = 1
_ET_EXEC = 2
_EM_X86_64 = 62
_PT_LOAD = 1
# Elf64_Ehdr: e_ident[16], e_type, e_machine, e_version, e_entry, e_phoff, e_shoff,
# e_flags, e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx
_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
# Elf64_Phdr: p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align
_PHDR = struct.Struct("<IIQQQQQQ")
_BZIMAGE_MAGIC_OFFSET = 0x202
HEADER_BYTES = 0x206  # the ELF header, or as much of a bzImage as shows its magic


@dataclass(frozen=True)
class LoadedKernel:
    entry: int
    """Guest-physical address of the 64-bit entry point."""
    end: int
    """First guest-physical address past the loaded image."""


@dataclass(frozen=True)
class Segment:
    """A ``PT_LOAD`` segment: ``file_size`` bytes from ``offset`` in the file go to ``address``, then
    zeros up to ``memory_size`` (its bss)."""

    offset: int
    address: int
    file_size: int
    memory_size: int


def load_vmlinux(path: Path, memory: GuestMemory) -> LoadedKernel:
    """Read the ``PT_LOAD`` segments of ``path`` straight into their physical addresses (no copy in between:
    the kernel's 10 MB is faulted in once, in guest RAM, where each page fault is dear under nested KVM)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise KernelImageError(f"kernel {path} does not exist") from None
    try:
        status = os.fstat(fd)
        if stat.S_ISDIR(status.st_mode):
            raise KernelImageError(f"kernel {path} is a directory, not a vmlinux file")
        size = status.st_size
        entry, phoff, phnum = parse_elf_header(os.pread(fd, HEADER_BYTES, 0), str(path))
        segments = parse_segments(os.pread(fd, phnum * _PHDR.size, phoff), phnum, size, str(path))

        def copy(segment: Segment, target: memoryview) -> None:
            done = 0
            while done < segment.file_size:
                count = os.preadv(fd, [target[done:]], segment.offset + done)
                if count == 0:
                    raise KernelImageError(f"kernel {path} was truncated while it was read")
                done += count

        return _load(segments, entry, memory, str(path), copy)
    finally:
        os.close(fd)


def load_vmlinux_bytes(image: bytes, memory: GuestMemory, name: str = "kernel") -> LoadedKernel:
    """As :func:`load_vmlinux`, from an image in memory."""
    entry, phoff, phnum = parse_elf_header(image[:HEADER_BYTES], name)
    segments = parse_segments(image[phoff : phoff + phnum * _PHDR.size], phnum, len(image), name)
    source = memoryview(image)

    def copy(segment: Segment, target: memoryview) -> None:
        target[:] = source[segment.offset : segment.offset + segment.file_size]

    return _load(segments, entry, memory, name, copy)


def parse_elf_header(head: bytes, name: str) -> tuple[int, int, int]:
    """``(entry, program header offset, program header count)`` of an x86_64 executable ELF whose first
    :data:`HEADER_BYTES` bytes (or all, if shorter) are ``head``; :class:`KernelImageError` for anything else."""
    if len(head) < _EHDR.size or head[:4] != _ELF_MAGIC:
        if head[_BZIMAGE_MAGIC_OFFSET : _BZIMAGE_MAGIC_OFFSET + 4] == b"HdrS":
            raise KernelImageError(f"{name} is a bzImage; pass the uncompressed vmlinux ELF instead")
        raise KernelImageError(f"{name} is not an ELF file (no ELF magic)")
    (ident, e_type, machine, _, entry, phoff, _, _, _, phentsize, phnum, _, _, _) = _EHDR.unpack_from(head)
    if ident[4] != _ELFCLASS64 or ident[5] != _ELFDATA2LSB or machine != _EM_X86_64:
        raise KernelImageError(f"{name} is not a little-endian x86_64 ELF64 file")
    if e_type != _ET_EXEC:
        raise KernelImageError(f"{name} is not an executable ELF (e_type={e_type})")
    if phentsize != _PHDR.size or phnum == 0:
        raise KernelImageError(f"{name} has a missing or truncated program header table")
    return entry, phoff, phnum


def parse_segments(table: bytes, count: int, file_size: int, name: str) -> list[Segment]:
    """The ``PT_LOAD`` segments of a program header ``table`` of ``count`` entries, each checked to lie
    inside a file of ``file_size`` bytes."""
    if len(table) < count * _PHDR.size:
        raise KernelImageError(f"{name} has a missing or truncated program header table")
    segments = []
    for i in range(count):
        p_type, _, offset, _, paddr, filesz, memsz, _ = _PHDR.unpack_from(table, i * _PHDR.size)
        if p_type != _PT_LOAD:
            continue
        if filesz > memsz or offset + filesz > file_size:
            raise KernelImageError(f"{name} is truncated: segment {i} needs bytes up to {offset + filesz:#x}")
        segments.append(Segment(offset, paddr, filesz, memsz))
    if not segments:
        raise KernelImageError(f"{name} has no loadable segments")
    return segments


def _load(
    segments: list[Segment], entry: int, memory: GuestMemory, name: str,
    copy: Callable[[Segment, memoryview], None],
) -> LoadedKernel:
    for index, segment in enumerate(segments):
        try:
            target = memory.view(segment.address, segment.memory_size)
        except GuestMemoryError:
            raise KernelImageError(
                f"{name} segment {index} at {segment.address:#x} (+{segment.memory_size:#x}) does not fit in guest RAM"
            ) from None
        with target:
            copy(segment, target[: segment.file_size])
            target[segment.file_size :] = bytes(segment.memory_size - segment.file_size)
    if not memory.contains(entry):
        raise KernelImageError(f"{name} entry point {entry:#x} is outside guest RAM")
    return LoadedKernel(entry=entry, end=max(segment.address + segment.memory_size for segment in segments))
