"""Pause every vCPU of a VM at a clean point (out of ``KVM_RUN``), and let them go again."""

from __future__ import annotations

import threading

from ..kvm import VcpuFd
from .stop import StopLatch

_POLL_INTERVAL = 0.05


class VmStopped(Exception):
    """The VM stopped while it was being paused."""


class PauseGate:
    """Thread-safe. vCPU threads call :meth:`park_if_paused` after each kick and :meth:`left` on exit.

    A vCPU is paused once its ``KVM_RUN`` has returned ``-EINTR``: KVM has then
    completed any pending port or MMIO access, so its state can be read and set.
    """

    def __init__(self, vcpus: list[VcpuFd], stop: StopLatch) -> None:
        self._vcpus = vcpus
        self._stop = stop
        self._changed = threading.Condition()
        self._paused = False
        self._parked = 0
        self._running = len(vcpus)

    def pause(self) -> None:
        """Block until every running vCPU is parked. Raises :class:`VmStopped` if the VM stops instead."""
        with self._changed:
            if self._paused:
                raise RuntimeError("the VM is already paused")
            self._paused = True
        for vcpu in self._vcpus:
            vcpu.kick()
        with self._changed:
            while self._parked < self._running and not self._stop.stopped:
                self._changed.wait(_POLL_INTERVAL)
        if self._stop.stopped:
            self.resume()
            raise VmStopped

    def resume(self) -> None:
        with self._changed:
            self._paused = False
            self._changed.notify_all()

    def park_if_paused(self) -> None:
        """On a vCPU thread: wait here while the VM is paused (or until it stops)."""
        with self._changed:
            if not self._paused:
                return
            self._parked += 1
            self._changed.notify_all()
            while self._paused and not self._stop.stopped:
                self._changed.wait(_POLL_INTERVAL)
            self._parked -= 1

    def left(self) -> None:
        """On a vCPU thread: this vCPU has stopped running for good."""
        with self._changed:
            self._running -= 1
            self._changed.notify_all()
