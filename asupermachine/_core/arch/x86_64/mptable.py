"""The Intel MultiProcessor table (MP spec 1.4, chapter 4) that tells Linux about vCPUs and the IOAPIC."""

from __future__ import annotations

import struct

from .layout import IOAPIC_ADDR, LAPIC_ADDR

MPF_SIGNATURE = b"_MP_"
MPC_SIGNATURE = b"PCMP"
MP_SPEC_REVISION = 4
APIC_VERSION = 0x14
IOAPIC_VERSION = 0x11
IOAPIC_PINS = 24
# Entry types (MP spec table 4-3)
MP_PROCESSOR = 0
MP_BUS = 1
MP_IOAPIC = 2
MP_INTSRC = 3
MP_LINTSRC = 4
# Interrupt types (table 4-9)
MP_INT = 0
MP_NMI = 1
MP_EXTINT = 3
CPU_ENABLED = 1
CPU_BOOTPROCESSOR = 2
ALL_LOCAL_APICS = 0xFF

_FLOATING_POINTER = struct.Struct("<4sIBBB5s")
_HEADER = struct.Struct("<4sHBB8s12sIHHIHBB")
_PROCESSOR = struct.Struct("<BBBBII8s")
_BUS = struct.Struct("<BB6s")
_IOAPIC = struct.Struct("<BBBBI")
_INTSRC = struct.Struct("<BBHBBBB")


def _checksum_fix(data: bytes | bytearray) -> int:
    """The byte that makes ``data`` sum to zero modulo 256."""
    return (-sum(data)) & 0xFF


def mptable(address: int, vcpus: int) -> bytes:
    """The floating pointer followed by the configuration table, to be placed at ``address``."""
    if not 1 <= vcpus <= 254:
        raise ValueError(f"the MP table describes 1..254 vCPUs, not {vcpus}")
    ioapic_id = vcpus + 1
    entries = [
        _PROCESSOR.pack(
            MP_PROCESSOR, cpu, APIC_VERSION, CPU_ENABLED | (CPU_BOOTPROCESSOR if cpu == 0 else 0), 0x600, 0x201, b""
        )
        for cpu in range(vcpus)
    ]
    entries.append(_BUS.pack(MP_BUS, 0, b"ISA   "))
    entries.append(_IOAPIC.pack(MP_IOAPIC, ioapic_id, IOAPIC_VERSION, 1, IOAPIC_ADDR))
    entries += [_INTSRC.pack(MP_INTSRC, MP_INT, 0, 0, pin, ioapic_id, pin) for pin in range(IOAPIC_PINS)]
    entries.append(_INTSRC.pack(MP_LINTSRC, MP_EXTINT, 0, 0, 0, 0, 0))
    entries.append(_INTSRC.pack(MP_LINTSRC, MP_NMI, 0, 0, 0, ALL_LOCAL_APICS, 1))
    body = b"".join(entries)
    table_length = _HEADER.size + len(body)
    header = _HEADER.pack(
        MPC_SIGNATURE, table_length, MP_SPEC_REVISION, 0, b"ASMACHIN", b"MICROVM     ", 0, 0, len(entries),
        LAPIC_ADDR, 0, 0, 0,
    )
    table = bytearray(header + body)
    table[7] = _checksum_fix(table)
    table_address = address + _FLOATING_POINTER.size
    pointer = bytearray(_FLOATING_POINTER.pack(MPF_SIGNATURE, table_address, 1, MP_SPEC_REVISION, 0, b""))
    pointer[10] = _checksum_fix(pointer)
    return bytes(pointer + table)
