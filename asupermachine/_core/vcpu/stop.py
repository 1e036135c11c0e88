"""The VM-wide stop latch: the first reason to stop wins, and every vCPU is kicked out of KVM_RUN."""

from __future__ import annotations

import threading

from ..._outcome import GuestExit
from ..kvm import VcpuFd


class StopLatch:
    """Thread-safe: set from device handlers on vCPU threads, from failures, or by the host."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._vcpus: list[VcpuFd] = []
        self.result: GuestExit | None = None
        self.failure: BaseException | None = None

    def watch(self, vcpu: VcpuFd) -> None:
        with self._lock:
            self._vcpus.append(vcpu)

    @property
    def stopped(self) -> bool:
        return self.result is not None or self.failure is not None

    def request(self, result: GuestExit) -> None:
        """Stop the VM for ``result`` unless it is already stopping."""
        with self._lock:
            if self.stopped:
                return
            self.result = result
        self._kick_all()

    def fail(self, error: BaseException) -> None:
        """Stop the VM because a vCPU thread failed with ``error``."""
        with self._lock:
            if self.failure is None and self.result is None:
                self.failure = error
        self._kick_all()

    def _kick_all(self) -> None:
        with self._lock:
            vcpus = list(self._vcpus)
        for vcpu in vcpus:
            vcpu.kick()
