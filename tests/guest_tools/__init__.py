"""Small static programs the tests put into guests (built with the guest's own C toolchain)."""

from __future__ import annotations

from pathlib import Path

from asupermachine.guest.initramfs import build_static_binary

VSOCK_TOOL_SOURCE = Path(__file__).parent / "vsock_tool.c"


def build_vsock_tool(directory: Path) -> bytes:
    """The ``vsock_tool`` executable (see its source for the modes)."""
    output = directory / "vsock_tool"
    build_static_binary(VSOCK_TOOL_SOURCE, output)
    return output.read_bytes()
