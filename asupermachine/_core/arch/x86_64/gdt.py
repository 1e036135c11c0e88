"""The boot GDT and the matching ``kvm_segment`` values for 64-bit entry."""

from __future__ import annotations

from dataclasses import dataclass

# Access/flags words as (flags << 12 | access): 64-bit code, data, 64-bit TSS.
GDT_CODE64 = 0xA09B
GDT_DATA = 0xC093
GDT_TSS = 0x808B
BOOT_GDT = (0, GDT_CODE64, GDT_DATA, GDT_TSS)


def gdt_entry(flags: int, base: int, limit: int) -> int:
    """One 8-byte descriptor (Intel SDM vol. 3, 3.4.5) as an integer."""
    return (
        ((base & 0xFF00_0000) << 32)
        | ((flags & 0xF0FF) << 40)
        | ((limit & 0xF_0000) << 32)
        | ((base & 0x00FF_FFFF) << 16)
        | (limit & 0xFFFF)
    )


def gdt_bytes() -> bytes:
    return b"".join(gdt_entry(flags, 0, 0xFFFFF if flags else 0).to_bytes(8, "little") for flags in BOOT_GDT)


@dataclass(frozen=True)
class Segment:
    """The fields of ``struct kvm_segment`` implied by a descriptor."""

    base: int
    limit: int
    selector: int
    type: int
    present: int
    dpl: int
    db: int
    s: int
    l: int  # noqa: E741 - the architectural name
    g: int
    avl: int


def segment_from_entry(entry: int, index: int) -> Segment:
    limit = (entry & 0xFFFF) | ((entry >> 32) & 0xF_0000)
    granular = (entry >> 55) & 1
    return Segment(
        base=((entry >> 16) & 0xFF_FFFF) | ((entry >> 32) & 0xFF00_0000),
        limit=(limit << 12) | 0xFFF if granular else limit,
        selector=index * 8,
        type=(entry >> 40) & 0xF,
        present=(entry >> 47) & 1,
        dpl=(entry >> 45) & 3,
        db=(entry >> 54) & 1,
        s=(entry >> 44) & 1,
        l=(entry >> 53) & 1,
        g=granular,
        avl=(entry >> 52) & 1,
    )


def boot_segments() -> tuple[Segment, Segment, Segment]:
    """Code, data and TSS segments as loaded from :func:`gdt_bytes`."""
    entries = [gdt_entry(flags, 0, 0xFFFFF if flags else 0) for flags in BOOT_GDT]
    return (
        segment_from_entry(entries[1], 1),
        segment_from_entry(entries[2], 2),
        segment_from_entry(entries[3], 3),
    )
