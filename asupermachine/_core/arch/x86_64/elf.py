"""Load an uncompressed x86_64 ``vmlinux`` ELF into guest memory.

We enter the kernel at the ELF entry point, ``startup_64``: the same 64-bit
entry the bzImage decompressor jumps to, so the slow (emulated, here) xz
decompression never runs and the VMM builds the long-mode state itself.
"""

from __future__ import annotations

import struct
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


@dataclass(frozen=True)
class LoadedKernel:
    entry: int
    """Guest-physical address of the 64-bit entry point."""
    end: int
    """First guest-physical address past the loaded image."""


def load_vmlinux(path: Path, memory: GuestMemory) -> LoadedKernel:
    """Copy the ``PT_LOAD`` segments of ``path`` to their physical addresses."""
    try:
        image = path.read_bytes()
    except FileNotFoundError:
        raise KernelImageError(f"kernel {path} does not exist") from None
    except IsADirectoryError:
        raise KernelImageError(f"kernel {path} is a directory, not a vmlinux file") from None
    return load_vmlinux_bytes(image, memory, str(path))


def load_vmlinux_bytes(image: bytes, memory: GuestMemory, name: str = "kernel") -> LoadedKernel:
    if len(image) < _EHDR.size or image[:4] != _ELF_MAGIC:
        if image[_BZIMAGE_MAGIC_OFFSET : _BZIMAGE_MAGIC_OFFSET + 4] == b"HdrS":
            raise KernelImageError(f"{name} is a bzImage; pass the uncompressed vmlinux ELF instead")
        raise KernelImageError(f"{name} is not an ELF file (no ELF magic)")
    (ident, e_type, machine, _, entry, phoff, _, _, _, phentsize, phnum, _, _, _) = _EHDR.unpack_from(image)
    if ident[4] != _ELFCLASS64 or ident[5] != _ELFDATA2LSB or machine != _EM_X86_64:
        raise KernelImageError(f"{name} is not a little-endian x86_64 ELF64 file")
    if e_type != _ET_EXEC:
        raise KernelImageError(f"{name} is not an executable ELF (e_type={e_type})")
    if phentsize != _PHDR.size or phnum == 0 or phoff + phnum * _PHDR.size > len(image):
        raise KernelImageError(f"{name} has a missing or truncated program header table")
    end = 0
    loaded = 0
    for i in range(phnum):
        p_type, _, offset, _, paddr, filesz, memsz, _ = _PHDR.unpack_from(image, phoff + i * _PHDR.size)
        if p_type != _PT_LOAD:
            continue
        if filesz > memsz or offset + filesz > len(image):
            raise KernelImageError(f"{name} is truncated: segment {i} needs bytes up to {offset + filesz:#x}")
        try:
            memory.write(paddr, image[offset : offset + filesz])
            memory.view(paddr + filesz, memsz - filesz)[:] = bytes(memsz - filesz)
        except GuestMemoryError:
            raise KernelImageError(
                f"{name} segment {i} at {paddr:#x} (+{memsz:#x}) does not fit in guest RAM"
            ) from None
        end = max(end, paddr + memsz)
        loaded += 1
    if not loaded:
        raise KernelImageError(f"{name} has no loadable segments")
    if not memory.contains(entry):
        raise KernelImageError(f"{name} entry point {entry:#x} is outside guest RAM")
    return LoadedKernel(entry=entry, end=end)
