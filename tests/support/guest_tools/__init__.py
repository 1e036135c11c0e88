"""Small static programs the tests put into guests (built with the guest's own C toolchain)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from asupermachine.guest.initramfs import build_static_binary

HERE = Path(__file__).parent
VSOCK_TOOL_SOURCE = HERE / "vsock_tool.c"
VECTOR_STRESS_SOURCE = HERE / "vector_stress.c"
STRING_STRESS_SOURCE = HERE / "string_stress.c"


def build_vsock_tool(directory: Path) -> bytes:
    """The ``vsock_tool`` executable (see its source for the modes)."""
    output = directory / "vsock_tool"
    build_static_binary(VSOCK_TOOL_SOURCE, output)
    return output.read_bytes()


def build_vector_stress(directory: Path) -> bytes:
    """``vector_stress PROCESSES THREADS ROUNDS`` (musl, like init): per-task registers, TLS, FS base."""
    output = directory / "vector_stress"
    build_static_binary(VECTOR_STRESS_SOURCE, output)
    return output.read_bytes()


def build_string_stress(directory: Path) -> bytes:
    """``string_stress PROCESSES ROUNDS``, static against glibc: its AVX string functions across processes."""
    output = directory / "string_stress"
    subprocess.run(
        ["gcc", "-static", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(output),
         str(STRING_STRESS_SOURCE)],
        check=True,
    )
    return output.read_bytes()
