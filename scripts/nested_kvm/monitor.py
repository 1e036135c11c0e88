"""Ask an L1's QEMU human monitor where its vCPUs are: what a run that stopped answering reports."""

from __future__ import annotations

import re
import socket
from pathlib import Path

PROMPT = b"(qemu) "
TIMEOUT_SECONDS = 10.0
# Where each vCPU is: x86's RIP line (with the flags); arm64's PC and PSTATE (with the exception level).
REGISTER_PIECE = re.compile(r"^CPU#\d+$|^RIP=.*$|^ PC=\S+|^PSTATE=\S+ \S+ \S+", re.MULTILINE)


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
    """Each vCPU's instruction pointer and flags (``CPU#0 RIP=... RFL=... CPL=0 ...``, ``CPU#0 PC=... PSTATE=...
    -ZC- EL1h``); empty if QEMU is mute."""
    try:
        with socket.socket(socket.AF_UNIX) as connection:
            connection.settimeout(TIMEOUT_SECONDS)
            connection.connect(str(monitor))
            _until_prompt(connection)
            registers = _command(connection, "info registers -a")
    except OSError:
        return []
    states: list[str] = []
    for piece in REGISTER_PIECE.findall(registers.replace("\r", "")):
        if piece.startswith("CPU#"):
            states.append(piece)
        elif states:
            states[-1] += " " + piece.strip()
    return states
