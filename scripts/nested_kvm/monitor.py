"""Ask an L1's QEMU human monitor where its vCPUs are: what a run that stopped answering reports."""

from __future__ import annotations

import re
import socket
from pathlib import Path

PROMPT = b"(qemu) "
TIMEOUT_SECONDS = 10.0
REGISTER_LINE = re.compile(r"^(CPU#\d+|RIP=.*)$", re.MULTILINE)


def _command(connection: socket.socket, text: str) -> str:
    connection.sendall(text.encode() + b"\n")
    return _until_prompt(connection)


def _until_prompt(connection: socket.socket) -> str:
    received = b""
    while not received.endswith(PROMPT):
        chunk = connection.recv(65536)
        if not chunk:
            break
        received += chunk
    return received.decode(errors="replace")


def vcpu_states(monitor: Path) -> list[str]:
    """Each vCPU's instruction pointer and flags (``CPU#0 RIP=... RFL=... CPL=0 ...``); empty if QEMU is mute."""
    try:
        with socket.socket(socket.AF_UNIX) as connection:
            connection.settimeout(TIMEOUT_SECONDS)
            connection.connect(str(monitor))
            _until_prompt(connection)
            registers = _command(connection, "info registers -a")
    except OSError:
        return []
    lines = REGISTER_LINE.findall(registers.replace("\r", ""))
    return [f"{cpu} {rip}" for cpu, rip in zip(lines[::2], lines[1::2], strict=False)]
