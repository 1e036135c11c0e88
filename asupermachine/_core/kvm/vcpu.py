"""A KVM vCPU fd: its ``kvm_run`` page, register state, and the kick."""

from __future__ import annotations

import mmap
import os
import threading
from typing import Any

from ._check import check
from ._flexible import new_flexible
from ._kvm_cffi import ffi, lib

# Installed once per process, before any vCPU can be kicked.
check(lib.amv_install_kick_handler(), "sigaction(kick signal)")

_bound = threading.local()


class VcpuFd:
    """One vCPU. ``run()`` blocks in ``KVM_RUN`` (without the GIL) until an exit or a kick."""

    def __init__(self, fd: int, index: int, mmap_size: int) -> None:
        self.fd = fd
        self.index = index
        self._mapping = mmap.mmap(fd, mmap_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._run_ptr = ffi.from_buffer(self._mapping)
        self.run_state: Any = ffi.cast("struct kvm_run *", self._run_ptr)
        exit_data = lib.amv_run_exit_data(self.run_state)
        self.io: Any = ffi.cast("struct amv_exit_io *", exit_data)
        self.mmio: Any = ffi.cast("struct amv_exit_mmio *", exit_data)
        self.internal: Any = ffi.cast("struct amv_exit_internal *", exit_data)
        self.system_event: Any = ffi.cast("struct amv_exit_system_event *", exit_data)
        self.fail_entry: Any = ffi.cast("struct amv_exit_fail_entry *", exit_data)
        self.run_page = memoryview(self._mapping)
        self._thread: int | None = None
        self._thread_lock = threading.Lock()

    # -- running and kicking -------------------------------------------------

    def run(self) -> int:
        """One ``KVM_RUN``: 0 on an exit to handle, ``-EINTR`` when kicked, other ``-errno`` on failure."""
        result: int = lib.amv_run(self.fd)
        return result

    def bind_to_current_thread(self) -> None:
        """Record the calling thread as the one to signal in ``kick()`` (and :meth:`current`'s answer)."""
        with self._thread_lock:
            self._thread = lib.amv_thread_self()
        _bound.vcpu = self

    def unbind_thread(self) -> None:
        with self._thread_lock:
            self._thread = None
        _bound.vcpu = None

    @staticmethod
    def current() -> VcpuFd | None:
        """The vCPU bound to the calling thread: in a device, the one whose exit it is handling."""
        vcpu: VcpuFd | None = getattr(_bound, "vcpu", None)
        return vcpu

    def kick(self) -> None:
        """Make the vCPU's ``KVM_RUN`` return ``-EINTR`` now, or as soon as it is entered."""
        self.run_state.immediate_exit = 1
        with self._thread_lock:
            if self._thread is not None:
                lib.amv_kick(self._thread)

    # -- state ---------------------------------------------------------------

    def get_regs(self) -> Any:
        regs = ffi.new("struct kvm_regs *")
        check(lib.amv_get_regs(self.fd, regs), "KVM_GET_REGS")
        return regs

    def set_regs(self, regs: Any) -> None:
        check(lib.amv_set_regs(self.fd, regs), "KVM_SET_REGS")

    def get_sregs(self) -> Any:
        sregs = ffi.new("struct kvm_sregs *")
        check(lib.amv_get_sregs(self.fd, sregs), "KVM_GET_SREGS")
        return sregs

    def set_sregs(self, sregs: Any) -> None:
        check(lib.amv_set_sregs(self.fd, sregs), "KVM_SET_SREGS")

    def set_fpu(self, fcw: int, mxcsr: int) -> None:
        fpu = ffi.new("struct kvm_fpu *")
        fpu.fcw = fcw
        fpu.mxcsr = mxcsr
        check(lib.amv_set_fpu(self.fd, fpu), "KVM_SET_FPU")

    def set_msrs(self, msrs: dict[int, int]) -> None:
        _owner, buf = new_flexible("struct kvm_msrs", "struct kvm_msr_entry", len(msrs))
        buf.nmsrs = len(msrs)
        for i, (index, value) in enumerate(msrs.items()):
            buf.entries[i].index = index
            buf.entries[i].data = value
        written = check(lib.amv_set_msrs(self.fd, buf), "KVM_SET_MSRS")
        if written != len(msrs):
            failed = list(msrs)[written]
            raise OSError(0, f"KVM_SET_MSRS refused MSR {failed:#x}")

    def get_msrs(self, indices: list[int]) -> dict[int, int]:
        """The values of the MSRs in ``indices`` that this vCPU has; ones KVM refuses are left out."""
        values: dict[int, int] = {}
        pending = list(indices)
        while pending:
            _owner, buf = new_flexible("struct kvm_msrs", "struct kvm_msr_entry", len(pending))
            buf.nmsrs = len(pending)
            for i, index in enumerate(pending):
                buf.entries[i].index = index
            read = check(lib.amv_get_msrs(self.fd, buf), "KVM_GET_MSRS")
            values.update((pending[i], int(buf.entries[i].data)) for i in range(read))
            pending = pending[read + 1 :]  # KVM stops at the first MSR it refuses: skip it
        return values

    def set_cpuid(self, entries: list[tuple[int, int, int, int, int, int, int]]) -> None:
        _owner, buf = new_flexible("struct kvm_cpuid2", "struct kvm_cpuid_entry2", len(entries))
        buf.nent = len(entries)
        for i, (function, index, flags, eax, ebx, ecx, edx) in enumerate(entries):
            e = buf.entries[i]
            e.function, e.index, e.flags = function, index, flags
            e.eax, e.ebx, e.ecx, e.edx = eax, ebx, ecx, edx
        check(lib.amv_set_cpuid2(self.fd, buf), "KVM_SET_CPUID2")

    def get_lapic(self) -> bytearray:
        lapic = ffi.new("struct kvm_lapic_state *")
        check(lib.amv_get_lapic(self.fd, lapic), "KVM_GET_LAPIC")
        return bytearray(ffi.buffer(lapic.regs))

    def set_lapic(self, regs: bytes) -> None:
        lapic = ffi.new("struct kvm_lapic_state *")
        ffi.buffer(lapic.regs)[:] = regs
        check(lib.amv_set_lapic(self.fd, lapic), "KVM_SET_LAPIC")

    def tsc_khz(self) -> int:
        """The guest's TSC frequency (``KVM_GET_TSC_KHZ``)."""
        return check(lib.amv_ioctl_struct(self.fd, lib.KVM_GET_TSC_KHZ, ffi.NULL), "KVM_GET_TSC_KHZ")

    def translate(self, linear: int) -> int | None:
        """The guest-physical address of a guest-virtual one, or None if unmapped."""
        physical = ffi.new("uint64_t *")
        if lib.amv_translate(self.fd, linear, physical) < 0:
            return None
        return int(physical[0])

    def close(self) -> None:
        if self.fd < 0:
            return
        self.run_page.release()
        ffi.release(self._run_ptr)
        self._mapping.close()
        os.close(self.fd)
        self.fd = -1
