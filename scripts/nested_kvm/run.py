"""One run of a command in an L1: prepare its directory, boot QEMU, stream the output, read the status."""

from __future__ import annotations

import enum
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .arch import L1Arch
from .freeze import FreezeWatch
from .initramfs import build_initramfs
from .kernel import fetch_kernel
from .monitor import vcpu_states
from .qemu import CONSOLE_NAME, MONITOR_NAME, qemu_command
from .root import L1Root

STAGE2 = Path(__file__).with_name("stage2.py")
POLL_SECONDS = 0.2
STUCK_NAME = "stuck.txt"
"""Where the L1's vCPUs were when its run timed out (from QEMU's monitor), in the run's directory."""
L1_FAILED = 125
"""Our exit status when the L1 itself failed (the command's own statuses pass through)."""
TIMED_OUT = 124
"""Our exit status when the run outlived its timeout (as timeout(1))."""
L1_FROZE = 126
"""Our exit status when the L1 froze (QEMU's TCG; see :mod:`.freeze`): the run may be tried again."""
FREEZE_POLL_SECONDS = 15.0
"""How often the L1's vCPUs are read while a run goes on, to catch a freeze within a minute."""


@dataclass(frozen=True)
class Request:
    argv: list[str]
    cwd: Path
    env: dict[str, str]
    memory_mib: int
    vcpus: int
    timeout: float | None
    console_log: Path | None


def run(arch: L1Arch, request: Request, root: L1Root) -> int:
    """Run ``request`` in an L1 of ``arch`` on ``root``; its exit status (or :data:`L1_FAILED`, :data:`TIMED_OUT`)."""
    if shutil.which(arch.qemu) is None:
        return _fail(f"{arch.qemu} is not installed (Debian: apt-get install {arch.qemu_package})")
    kernel = fetch_kernel(arch)
    initramfs = build_initramfs(arch, kernel)
    with tempfile.TemporaryDirectory(prefix="nested-kvm-") as scratch:
        io = Path(scratch)
        (io / "request").mkdir()
        shutil.copy2(STAGE2, io / "request" / "stage2.py")
        body = {
            "argv": request.argv, "cwd": str(request.cwd), "env": request.env,
            "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),  # the L1's PID 1 starts at 1024/4096
        }
        (io / "request" / "request.json").write_text(json.dumps(body))
        (io / "request" / "stage1.conf").write_text(root.stage1_config())
        for name in ("stdout", "stderr"):
            (io / name).touch()
        command = qemu_command(arch, kernel, initramfs, io, root, memory_mib=request.memory_mib, vcpus=request.vcpus)
        with (io / "qemu.log").open("wb") as qemu_log:
            qemu = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=qemu_log, stderr=subprocess.STDOUT)
            try:
                ending = _stream_until_exit(qemu, io, request.timeout)
                if ending is not Ending.EXITED:
                    (io / STUCK_NAME).write_text("\n".join(vcpu_states(io / MONITOR_NAME)))
            finally:
                if qemu.poll() is None:
                    qemu.kill()
                qemu.wait()
        if request.console_log is not None:
            shutil.copyfile(io / CONSOLE_NAME, request.console_log)
        return _outcome(io, ending, qemu.returncode, request.timeout)


class Ending(enum.Enum):
    EXITED = "exited"
    TIMED_OUT = "timed out"
    FROZE = "froze"


def _stream_until_exit(qemu: subprocess.Popen[bytes], io: Path, timeout: float | None) -> Ending:
    """Copy the command's output to ours until QEMU exits, the timeout comes, or the L1 freezes."""
    deadline = None if timeout is None else time.monotonic() + timeout
    watch, next_reading = FreezeWatch(), time.monotonic() + FREEZE_POLL_SECONDS
    with (io / "stdout").open("rb") as out, (io / "stderr").open("rb") as err:
        streams = ((out, sys.stdout.buffer), (err, sys.stderr.buffer))
        while qemu.poll() is None:
            now = time.monotonic()
            if deadline is not None and now > deadline:
                return Ending.TIMED_OUT
            if now > next_reading:
                next_reading = now + FREEZE_POLL_SECONDS
                if watch.observe(vcpu_states(io / MONITOR_NAME)) is not None:
                    return Ending.FROZE
            if not _copy_new(streams):
                time.sleep(POLL_SECONDS)
        _copy_new(streams)
    return Ending.EXITED


def _copy_new(streams: tuple[tuple[BinaryIO, BinaryIO], ...]) -> bool:
    copied = False
    for source, target in streams:
        chunk = source.read()
        if chunk:
            target.write(chunk)
            target.flush()
            copied = True
    return copied


def _outcome(io: Path, ending: Ending, qemu_status: int, timeout: float | None) -> int:
    if ending is not Ending.EXITED:
        where = "\n  ".join((io / STUCK_NAME).read_text().splitlines() or ["(QEMU's monitor did not answer)"])
        if ending is Ending.FROZE:
            return _fail(
                "the L1 froze (a vCPU sat with interrupts off at one spot for a minute: QEMU TCG's stale "
                f"breakpoint, docs/kvm.md) and was stopped; its vCPUs were at:\n  {where}", io, L1_FROZE,
            )
        return _fail(
            f"the run outlived its timeout of {timeout:g} s and was stopped; the L1's vCPUs were at:\n  {where}",
            io, TIMED_OUT,
        )
    if (io / "status").is_file():
        return int((io / "status").read_text())
    if (io / "failure").is_file():
        return _fail((io / "failure").read_text().strip(), io)
    qemu_said = (io / "qemu.log").read_text(errors="replace").strip()[-2000:]
    return _fail(f"the L1 ended without a status (QEMU exited {qemu_status}) {qemu_said}", io)


def _fail(why: str, io: Path | None = None, status: int = L1_FAILED) -> int:
    print(f"nested-kvm: {why}", file=sys.stderr)
    if io is not None and (io / CONSOLE_NAME).is_file():
        tail = (io / CONSOLE_NAME).read_text(errors="replace").splitlines()[-30:]
        print("nested-kvm: the L1's console ended with:", *tail, sep="\n  ", file=sys.stderr)
    return status
