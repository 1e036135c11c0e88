"""What a test process holds, to prove a VM left nothing behind."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Held:
    fds: int
    kvm_fds: int
    kvm_mappings: int
    guest_sized_mappings: int
    threads: int

THREAD_SETTLE = 2.0
# Guest RAM is at least this big; thread stacks and allocator arenas are smaller.
GUEST_SIZED = 64 << 20


def _is_kvm(target: str) -> bool:
    """An fd's target is KVM's: the device, or a VM or vCPU (not any path that happens to say "kvm")."""
    return target == "/dev/kvm" or target.startswith("anon_inode:kvm")


def kvm_fd_targets() -> list[str]:
    """What this process's KVM fds are (``/dev/kvm``, ``anon_inode:kvm-vm``, ...), to say which leaked."""
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:
            continue
        if _is_kvm(target):
            targets.append(f"{fd} -> {target}")
    return targets


def held() -> Held:
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
        except FileNotFoundError:
            pass  # the fd listing's own descriptor
    kvm_mappings = guest_sized = 0
    with open("/proc/self/maps") as maps:
        for line in maps:
            start, end = (int(part, 16) for part in line.split()[0].split("-"))
            kvm_mappings += "anon_inode:kvm" in line
            guest_sized += end - start >= GUEST_SIZED and len(line.split()) == 5
    return Held(
        fds=len(targets),
        kvm_fds=sum(map(_is_kvm, targets)),
        kvm_mappings=kvm_mappings,
        guest_sized_mappings=guest_sized,
        threads=sum(not _idle_pool_worker(frame) for frame in sys._current_frames().values()),
    )


def _idle_pool_worker(frame: object) -> bool:
    """A worker thread of trio's or anyio's pool waiting for work (kept ~10 s, then it exits)."""
    stack = []
    while frame is not None:
        code = frame.f_code  # type: ignore[attr-defined]
        stack.append((os.path.basename(code.co_filename), code.co_name))
        frame = frame.f_back  # type: ignore[attr-defined]
    if stack and stack[0] == ("_thread_cache.py", "_work"):
        return True  # trio: blocked in the cache's lock acquire
    return ("_asyncio.py", "run") in stack and stack[0][1] == "wait" and ("queue.py", "get") in stack[:3]


def assert_nothing_left(before: Held) -> None:
    """No fd, KVM object, mapping or busy thread survives (idle pool workers are not counted).

    A pool worker that has just handed back its result needs a moment to go idle
    again, so threads get up to :data:`THREAD_SETTLE` seconds to settle.
    """
    after = held()
    deadline = time.monotonic() + THREAD_SETTLE
    while after.threads > before.threads and time.monotonic() < deadline:
        time.sleep(0.01)
        after = held()
    assert after.kvm_fds == 0, (after, kvm_fd_targets())
    assert after.kvm_mappings == 0, after
    assert after.guest_sized_mappings == before.guest_sized_mappings, (before, after)
    assert after.fds == before.fds, (before, after)
    assert after.threads <= before.threads, (before, after)
