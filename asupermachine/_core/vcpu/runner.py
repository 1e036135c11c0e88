"""The vCPU loop: ``KVM_RUN`` on a dedicated OS thread, each exit dispatched to a bus.

This is the hot path: one iteration per guest port or MMIO access. It keeps
cffi views of ``kvm_run`` bound to locals and does nothing that is not needed.
"""

from __future__ import annotations

import errno
from collections.abc import Callable

from ..._errors import GuestError
from ..._outcome import GuestExit, ShutdownReason
from ..devices.bus import Bus
from ..kvm import VcpuFd
from ..kvm._kvm_cffi import lib
from ..memory import GuestMemory
from ..platform import Platform
from .pause import PauseGate
from .stop import StopLatch

_INTERRUPTED = (-errno.EINTR, -errno.EAGAIN)
_EXIT_NAMES = {
    getattr(lib, name): name
    for name in dir(lib)
    if name.startswith("KVM_EXIT_") and not name.startswith("KVM_EXIT_IO_")
}


class VcpuRunner:
    """Runs one vCPU until the :class:`StopLatch` is set; call :meth:`run` on the vCPU's own thread."""

    def __init__(
        self,
        vcpu: VcpuFd,
        *,
        pio: Bus,
        mmio: Bus,
        memory: GuestMemory,
        stop: StopLatch,
        pause: PauseGate,
        console_tail: Callable[[], str],
        platform: Platform,
    ) -> None:
        self._vcpu = vcpu
        self._pio = pio
        self._mmio = mmio
        self._memory = memory
        self._stop = stop
        self._pause = pause
        self._console_tail = console_tail
        self._platform = platform
        stop.watch(vcpu)

    def run(self) -> None:
        """Loop in KVM_RUN until the VM stops. A failure is recorded in the latch, then raised."""
        self._vcpu.bind_to_current_thread()
        try:
            self._loop()
        except BaseException as error:
            self._stop.fail(error)
            raise
        finally:
            self._vcpu.unbind_thread()
            self._pause.left()

    def _loop(self) -> None:
        vcpu, stop = self._vcpu, self._stop
        run_state = vcpu.run_state
        while not stop.stopped:
            result = vcpu.run()
            if result < 0:
                if result in _INTERRUPTED:
                    run_state.immediate_exit = 0
                    self._pause.park_if_paused()
                    continue
                raise self._guest_error(f"KVM_RUN failed with errno {-result}", "KVM_RUN error")
            reason = run_state.exit_reason
            if reason == lib.KVM_EXIT_IO:
                self._port_io()
            elif reason == lib.KVM_EXIT_MMIO:
                self._mmio_access()
            elif reason == lib.KVM_EXIT_INTR or reason == lib.KVM_EXIT_HLT:
                continue
            elif reason == lib.KVM_EXIT_SHUTDOWN:
                stop.request(GuestExit(ShutdownReason.TRIPLE_FAULT))
            elif reason == lib.KVM_EXIT_SYSTEM_EVENT:
                event = vcpu.system_event
                stop.request(self._platform.system_exit(vcpu, event.type, event.data[0]))
            elif reason == lib.KVM_EXIT_INTERNAL_ERROR:
                suberror = vcpu.internal.suberror
                what = "emulation failure" if suberror == lib.KVM_INTERNAL_ERROR_EMULATION else "internal error"
                raise self._guest_error(f"KVM {what} (suberror {suberror})", "KVM_EXIT_INTERNAL_ERROR")
            elif reason == lib.KVM_EXIT_FAIL_ENTRY:
                code = vcpu.fail_entry.hardware_entry_failure_reason
                raise self._guest_error(f"KVM could not enter the guest (reason {code:#x})", "KVM_EXIT_FAIL_ENTRY")
            else:
                name = _EXIT_NAMES.get(reason, str(reason))
                raise self._guest_error(f"unexpected vCPU exit {name}", name)

    def _port_io(self) -> None:
        io, page, pio = self._vcpu.io, self._vcpu.run_page, self._pio
        port, size, offset = io.port, io.size, io.data_offset
        if io.direction == lib.KVM_EXIT_IO_OUT:
            for _ in range(io.count):
                pio.write(port, size, int.from_bytes(page[offset : offset + size], "little"))
                offset += size
        else:
            for _ in range(io.count):
                page[offset : offset + size] = pio.read(port, size).to_bytes(size, "little")
                offset += size

    def _mmio_access(self) -> None:
        mmio = self._vcpu.mmio
        size = mmio.len
        if size not in (1, 2, 4, 8):
            raise self._guest_error(f"MMIO access of {size} bytes at {mmio.phys_addr:#x}", "KVM_EXIT_MMIO")
        if mmio.is_write:
            self._mmio.write(mmio.phys_addr, size, int.from_bytes(bytes(mmio.data)[:size], "little"))
        else:
            value = self._mmio.read(mmio.phys_addr, size)
            mmio.data[0:size] = list(value.to_bytes(size, "little"))

    def _guest_error(self, message: str, exit_reason: str) -> GuestError:
        rip, instruction = self._platform.where(self._vcpu, self._memory)
        return GuestError(
            f"vCPU {self._vcpu.index}: {message}",
            exit_reason=exit_reason,
            rip=rip,
            instruction=instruction,
            console_tail=self._console_tail(),
        )
