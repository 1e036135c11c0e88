"""Guest tasks' extended vector state, switched by the VMM for a kernel that keeps only x87/SSE.

Under software KVM (``kvm_pvm``) our guest kernel runs without XSAVE, which the
emulator refuses, so its context switches keep x87/SSE state alone; guest user
code runs natively there and uses the real AVX and AVX-512 registers, which
would then leak between tasks (the upper halves of ymm0-15, zmm16-31, k0-7).
Our kernel (``guest/kernel/patches/0006-vmm-switched-xstate.patch``) writes a
task's pid to a port when it saves that task's registers, when it loads them
before the task returns to user mode, and when it drops them (exit, exec).
The vCPU thread handling that write moves the rest of the state with
``KVM_GET_XSAVE``/``KVM_SET_XSAVE``. On hardware KVM the kernel has XSAVE and
never writes these ports.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Mapping

from ..kvm import VcpuFd
from ..kvm.state import StateKind, get_state, set_state

XSTATE_SAVE_PORT = 0xF6
XSTATE_LOAD_PORT = 0xF7
XSTATE_DROP_PORT = 0xF8
# The kernel writes a 32-bit pid (outl): the last port's access reaches 3 ports past it.
XSTATE_PORT_RANGE = XSTATE_DROP_PORT + 4 - XSTATE_SAVE_PORT

# Intel SDM vol. 1, 13.4: the XSAVE area in standard form (what KVM_GET_XSAVE gives):
# the 512-byte legacy (FXSAVE) region, a 64-byte header starting with XSTATE_BV,
# then the extended components. x87 and SSE (XSTATE_BV bits 0-1) are the kernel's own.
XSAVE_HEADER_OFFSET = 512
XSAVE_EXTENDED_OFFSET = 576
XSTATE_BV = struct.Struct("<Q")
XFEATURE_MASK_FP_SSE = 0b11
# Linux's PID_MAX_LIMIT is at most 2**22; a larger "pid" is not one.
PID_LIMIT = 1 << 22
# At most this many tasks' states are kept (~2.4 KiB each with AVX-512); past it the
# least recently saved is forgotten, so a guest cannot grow the VMM without bound.
MAX_TASKS = 4096


class TaskVectorStates:
    """The extended state of each guest task whose registers are not loaded, by pid. Sans-IO."""

    def __init__(self, saved: Mapping[int, bytes] | None = None, *, capacity: int = MAX_TASKS) -> None:
        self._saved: OrderedDict[int, bytes] = OrderedDict(saved or {})
        self._capacity = capacity

    def save(self, pid: int, xsave: bytes) -> None:
        """The vCPU's registers (``xsave``, a KVM XSAVE area) are task ``pid``'s: keep their extended part."""
        self._saved.pop(pid, None)
        self._saved[pid] = bytes(xsave[XSAVE_HEADER_OFFSET:])
        while len(self._saved) > self._capacity:
            self._saved.popitem(last=False)

    def load(self, pid: int, xsave: bytes) -> bytes:
        """``xsave`` with its extended part replaced by task ``pid``'s (its init state if none is kept)."""
        merged = bytearray(xsave)
        (current_features,) = XSTATE_BV.unpack_from(merged, XSAVE_HEADER_OFFSET)
        saved = self._saved.get(pid)
        if saved is None:
            merged[XSAVE_HEADER_OFFSET:] = bytes(len(merged) - XSAVE_HEADER_OFFSET)
            task_features = 0
        else:
            merged[XSAVE_HEADER_OFFSET : XSAVE_HEADER_OFFSET + len(saved)] = saved
            (task_features,) = XSTATE_BV.unpack_from(saved)
        features = (current_features & XFEATURE_MASK_FP_SSE) | (task_features & ~XFEATURE_MASK_FP_SSE)
        XSTATE_BV.pack_into(merged, XSAVE_HEADER_OFFSET, features)
        return bytes(merged)

    def drop(self, pid: int) -> None:
        """Task ``pid`` ended or exec'd: its state is gone."""
        self._saved.pop(pid, None)

    def state(self) -> dict[int, bytes]:
        """The kept states, oldest first (a snapshot's copy)."""
        return dict(self._saved)


class VectorStatePorts:
    """The ports on the PIO bus (:data:`XSTATE_PORT_RANGE` from the first).

    Each write is handled on the vCPU thread that made it.
    """

    def __init__(self, states: TaskVectorStates) -> None:
        self.states = states
        self.ignored = 0
        """Writes that named no task (wrong size, out-of-range pid): a confused or hostile guest."""

    def read(self, offset: int, size: int) -> int:
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        vcpu = VcpuFd.current()
        if size != 4 or not 0 < value < PID_LIMIT or vcpu is None:
            self.ignored += 1
            return
        port = XSTATE_SAVE_PORT + offset
        if port == XSTATE_SAVE_PORT:
            self.states.save(value, get_state(vcpu.fd, StateKind.XSAVE))
        elif port == XSTATE_LOAD_PORT:
            set_state(vcpu.fd, StateKind.XSAVE, self.states.load(value, get_state(vcpu.fd, StateKind.XSAVE)))
        elif port == XSTATE_DROP_PORT:
            self.states.drop(value)
        else:
            self.ignored += 1
