"""Which processes a server or kernel left, and waiting for them to end (pidfds, not polling)."""

from __future__ import annotations

import os

import anyio
import psutil


def alive(process: psutil.Process) -> bool:
    """Still running (a zombie has ended: only its exit status is left to collect)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def describe(process: psutil.Process) -> str:
    try:
        return f"{process.pid} (parent {process.ppid()}, {process.status()}): {' '.join(process.cmdline())}"
    except psutil.NoSuchProcess:
        return f"{process.pid} (gone)"


def kvm_fds(pid: int) -> int:
    """How many fds on KVM objects (``/dev/kvm``, VMs, vCPUs) process ``pid`` holds."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += "kvm" in os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            pass  # closed while we looked
    return count


async def ended(processes: list[psutil.Process]) -> None:
    """Until each of ``processes`` has ended.

    A helper that outlives its parent by a moment (multiprocessing's resource
    tracker sees its pipe close only when the parent is gone) is still exiting
    when the parent has; a leaked one never ends, and the caller's deadline fails.
    """
    for process in processes:
        try:
            pidfd = os.pidfd_open(process.pid)
        except ProcessLookupError:
            continue
        try:
            if process.is_running():  # the pid is still that process's, not reused
                await anyio.wait_readable(pidfd)  # readable once it has terminated
        finally:
            os.close(pidfd)
