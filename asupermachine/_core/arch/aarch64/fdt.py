"""The flattened device tree (DTB) format of the Devicetree Specification v0.4, chapter 5, written (sans-IO).

A tree of :class:`Node` s, each with properties (name -> raw bytes, in order)
and children, becomes a blob: a 40-byte header, the memory reservation block,
the structure block (``FDT_BEGIN_NODE``, ``FDT_PROP``, ``FDT_END_NODE`` tokens,
``FDT_END``) and the strings block of property names. All big-endian. The
value helpers (:func:`cells`, :func:`string`...) encode the spec's types.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

MAGIC = 0xD00DFEED
VERSION = 17
LAST_COMPATIBLE_VERSION = 16
HEADER = struct.Struct(">10I")
RESERVATION = struct.Struct(">QQ")
FDT_BEGIN_NODE, FDT_END_NODE, FDT_PROP, FDT_END = 1, 2, 3, 9
TOKEN = struct.Struct(">I")
PROPERTY = struct.Struct(">III")  # FDT_PROP, value length, name offset in the strings block
NODE_NAME = re.compile(r"[A-Za-z0-9,._+-]{1,31}(@[A-Za-z0-9,._+-]+)?")
PROPERTY_NAME = re.compile(r"[A-Za-z0-9,._+?#-]{1,31}")


@dataclass
class Node:
    """One node: ``name`` (``unit@address``; the root's is empty), its properties and its children."""

    name: str
    properties: dict[str, bytes] = field(default_factory=dict)
    children: list[Node] = field(default_factory=list)

    def child(self, name: str, properties: Mapping[str, bytes] | None = None) -> Node:
        """Add a child node and return it."""
        node = Node(name, dict(properties or {}))
        self.children.append(node)
        return node


def cells(*values: int) -> bytes:
    """``<u32 ...>``: each value one big-endian cell."""
    return b"".join(TOKEN.pack(value) for value in values)


def pairs(*values: int) -> bytes:
    """Each value as two cells (an address or size with ``#address-cells``/``#size-cells`` of 2)."""
    return b"".join(struct.pack(">Q", value) for value in values)


def string(text: str) -> bytes:
    return text.encode() + b"\0"


def strings(*texts: str) -> bytes:
    """A ``<stringlist>``, as ``compatible`` takes."""
    return b"".join(map(string, texts))


EMPTY = b""
"""A property that is there or not (``interrupt-controller``)."""


def blob(root: Node, reserved: Iterable[tuple[int, int]] = (), boot_cpu: int = 0) -> bytes:
    """The DTB of ``root``, with ``reserved`` (address, size) memory ranges.

    :raises ValueError: for a node or property name the spec does not allow, or two the same
    """
    names: dict[str, int] = {}
    table = bytearray()
    structure = bytearray()

    def name_offset(name: str) -> int:
        if name not in names:
            names[name] = len(table)
            table.extend(string(name))
        return names[name]

    def add(node: Node, is_root: bool) -> None:
        if not is_root and not NODE_NAME.fullmatch(node.name):
            raise ValueError(f"{node.name!r} is not a device tree node name")
        structure.extend(TOKEN.pack(FDT_BEGIN_NODE) + _padded(string(node.name)))
        for name, value in node.properties.items():
            if not PROPERTY_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a device tree property name")
            structure.extend(PROPERTY.pack(FDT_PROP, len(value), name_offset(name)) + _padded(value))
        if len({child.name for child in node.children}) < len(node.children):
            raise ValueError(f"node {node.name or '/'!r} has two children of one name")
        for child in node.children:
            add(child, False)
        structure.extend(TOKEN.pack(FDT_END_NODE))

    add(root, True)
    structure.extend(TOKEN.pack(FDT_END))
    reservations = b"".join(RESERVATION.pack(address, size) for address, size in reserved) + RESERVATION.pack(0, 0)
    reservations_at = HEADER.size + (-HEADER.size % 8)
    structure_at = reservations_at + len(reservations)
    strings_at = structure_at + len(structure)
    total = strings_at + len(table)
    header = HEADER.pack(
        MAGIC, total, structure_at, strings_at, reservations_at, VERSION, LAST_COMPATIBLE_VERSION, boot_cpu,
        len(table), len(structure),
    )
    return header + b"\0" * (reservations_at - HEADER.size) + reservations + structure + table


def _padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)
