"""PauseGate driven by plain threads that stand in for vCPU run loops (no KVM)."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import cast

from asupermachine import GuestExit, ShutdownReason
from asupermachine._core.kvm import VcpuFd
from asupermachine._core.vcpu.pause import PauseGate, VmStopped
from asupermachine._core.vcpu.stop import StopLatch

# Seconds. Long enough never to trip on a loaded machine; a bug then fails instead of hanging.
JOIN_TIMEOUT = 10.0
# Seconds a running fake vCPU spends "in the guest" before an ordinary (non-EINTR) exit.
GUEST_SLICE = 0.002
# Seconds to watch for something that must not happen (several poll intervals of the gate).
QUIET_PERIOD = 0.2


class FakeVcpu:
    """Stands in for :class:`VcpuFd`: :meth:`kick` makes the current or next ``run`` return as ``-EINTR``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kicked = threading.Event()
        self.kicks = 0
        self.entries = 0
        """How many times the thread entered the guest (``KVM_RUN``)."""

    def kick(self) -> None:
        with self._lock:
            self.kicks += 1
        self._kicked.set()

    def run(self) -> bool:
        """One ``KVM_RUN``: True if it was interrupted by a kick."""
        self.entries += 1
        if self._kicked.wait(GUEST_SLICE):
            self._kicked.clear()
            return True
        return False


# PauseGate and StopLatch only ever call kick() on a vCPU.
def as_vcpu(fake: FakeVcpu) -> VcpuFd:
    return cast(VcpuFd, fake)


def as_vcpus(fakes: list[FakeVcpu]) -> list[VcpuFd]:
    return [as_vcpu(fake) for fake in fakes]


class Call:
    """``function()`` on its own daemon thread, keeping what it raised."""

    def __init__(self, function: Callable[[], None]) -> None:
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(function,), daemon=True)
        self._thread.start()

    def _run(self, function: Callable[[], None]) -> None:
        try:
            function()
        except BaseException as error:
            self.error = error

    def finished(self, timeout: float = JOIN_TIMEOUT) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()


class FakeVm:
    """vCPU threads looping as :class:`VcpuRunner` does: park after each kick, ``left()`` on the way out."""

    def __init__(self, vcpus: int) -> None:
        self.stop = StopLatch()
        self.vcpus = [FakeVcpu() for _ in range(vcpus)]
        for vcpu in self.vcpus:
            self.stop.watch(as_vcpu(vcpu))
        self.gate = PauseGate(as_vcpus(self.vcpus), self.stop)
        self.threads: list[Call] = []

    def start(self) -> None:
        self.threads = [Call(functools.partial(self._loop, vcpu)) for vcpu in self.vcpus]

    def _loop(self, vcpu: FakeVcpu) -> None:
        try:
            while not self.stop.stopped:
                if vcpu.run():
                    self.gate.park_if_paused()
        finally:
            self.gate.left()

    def pause(self) -> None:
        """Pause the VM, failing (not hanging) if that takes more than :data:`JOIN_TIMEOUT`."""
        pausing = Call(self.gate.pause)
        assert pausing.finished(), "pause did not return"
        assert pausing.error is None

    def entries(self) -> list[int]:
        return [vcpu.entries for vcpu in self.vcpus]

    def __enter__(self) -> FakeVm:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop.request(GuestExit(ShutdownReason.HOST))
        self.gate.resume()
        ended = all(thread.finished() for thread in self.threads)
        if kind is None:  # else the test's own failure says more
            assert ended, "a vCPU thread did not end after the stop"


def wait_until(condition: Callable[[], bool], timeout: float = JOIN_TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def test_pause_kicks_every_vcpu() -> None:
    with FakeVm(3) as vm:
        vm.pause()
        assert [vcpu.kicks for vcpu in vm.vcpus] == [1, 1, 1]
        vm.gate.resume()


def test_paused_vcpus_stay_out_of_the_guest() -> None:
    with FakeVm(3) as vm:
        assert wait_until(lambda: all(entries > 0 for entries in vm.entries()))
        vm.pause()
        before = vm.entries()
        time.sleep(QUIET_PERIOD)
        assert vm.entries() == before
        vm.gate.resume()


def test_resume_lets_parked_vcpus_run_again() -> None:
    with FakeVm(3) as vm:
        vm.pause()
        parked = vm.entries()
        vm.gate.resume()
        assert wait_until(lambda: all(now > then for now, then in zip(vm.entries(), parked, strict=True)))


def test_pause_waits_for_a_vcpu_busy_outside_the_guest() -> None:
    stop = StopLatch()
    busy, idle = FakeVcpu(), FakeVcpu()
    gate = PauseGate(as_vcpus([busy, idle]), stop)
    handler_done = threading.Event()

    def busy_in_a_device_handler() -> None:
        handler_done.wait(JOIN_TIMEOUT)
        gate.park_if_paused()
        gate.left()

    def idle_in_the_guest() -> None:
        gate.park_if_paused()
        gate.left()

    busy_thread = Call(busy_in_a_device_handler)
    pausing = Call(gate.pause)
    assert wait_until(lambda: idle.kicks == 1)
    idle_thread = Call(idle_in_the_guest)
    assert not pausing.finished(QUIET_PERIOD), "pause returned before every vCPU had parked"
    handler_done.set()
    assert pausing.finished() and pausing.error is None
    gate.resume()
    assert busy_thread.finished() and idle_thread.finished()


def test_every_pause_of_a_repeated_pause_and_resume_parks_all_vcpus() -> None:
    rounds = 5
    with FakeVm(2) as vm:
        for _ in range(rounds):
            running = vm.entries()
            # Back in the guest first, so that this pause cannot count the last one's parking.
            assert wait_until(
                lambda running=running: all(now > then for now, then in zip(vm.entries(), running, strict=True))
            )
            vm.pause()
            parked = vm.entries()
            time.sleep(QUIET_PERIOD / 4)
            assert vm.entries() == parked, "a vCPU ran on while the VM was paused"
            vm.gate.resume()
        assert [vcpu.kicks for vcpu in vm.vcpus] == [rounds, rounds]


def test_a_later_pause_waits_for_a_vcpu_busy_outside_the_guest_too() -> None:
    stop = StopLatch()
    vcpu = FakeVcpu()
    gate = PauseGate(as_vcpus([vcpu]), stop)
    back_from_first_pause, handler_done = threading.Event(), threading.Event()

    def park_then_get_busy() -> None:
        gate.park_if_paused()
        back_from_first_pause.set()
        handler_done.wait(JOIN_TIMEOUT)
        gate.park_if_paused()
        gate.left()

    first = Call(gate.pause)
    assert wait_until(lambda: vcpu.kicks == 1)
    vcpu_thread = Call(park_then_get_busy)
    assert first.finished() and first.error is None
    gate.resume()
    assert back_from_first_pause.wait(JOIN_TIMEOUT)
    # The first pause's parking must not count for this one.
    second = Call(gate.pause)
    assert not second.finished(QUIET_PERIOD), "pause returned before the busy vCPU had parked"
    handler_done.set()
    assert second.finished() and second.error is None
    gate.resume()
    assert vcpu_thread.finished()


def test_pausing_again_before_resume_is_refused() -> None:
    with FakeVm(2) as vm:
        vm.pause()
        refused = Call(vm.gate.pause)
        assert refused.finished() and isinstance(refused.error, RuntimeError)
        assert "already paused" in str(refused.error)
        before = vm.entries()
        time.sleep(QUIET_PERIOD)
        assert vm.entries() == before, "the refused pause let the vCPUs go"
        vm.gate.resume()


def test_resume_without_pause_is_harmless() -> None:
    with FakeVm(2) as vm:
        vm.gate.resume()
        vm.pause()
        vm.gate.resume()


def test_park_if_paused_returns_at_once_when_not_paused() -> None:
    gate = PauseGate(as_vcpus([FakeVcpu()]), StopLatch())
    parking = Call(gate.park_if_paused)
    assert parking.finished()


def test_pause_of_a_vm_without_vcpus_returns_at_once() -> None:
    gate = PauseGate([], StopLatch())
    pausing = Call(gate.pause)
    assert pausing.finished() and pausing.error is None


def test_a_stop_while_paused_frees_the_parked_vcpus_without_resume() -> None:
    with FakeVm(2) as vm:
        vm.pause()
        vm.stop.request(GuestExit(ShutdownReason.HOST))
        assert all(thread.finished() for thread in vm.threads), "a parked vCPU stayed parked after the VM stopped"


def test_pausing_a_stopped_vm_raises_vm_stopped() -> None:
    vm = FakeVm(2)
    with vm:
        vm.stop.request(GuestExit(ShutdownReason.POWER_OFF))
        assert all(thread.finished() for thread in vm.threads)
    pausing = Call(vm.gate.pause)
    assert pausing.finished() and isinstance(pausing.error, VmStopped)


def test_a_pause_refused_by_a_stop_does_not_leave_the_gate_paused() -> None:
    stop = StopLatch()
    gate = PauseGate(as_vcpus([FakeVcpu()]), stop)
    stop.request(GuestExit(ShutdownReason.POWER_OFF))
    for _ in range(2):
        pausing = Call(gate.pause)
        # A gate left paused would refuse the second pause with RuntimeError instead.
        assert pausing.finished() and isinstance(pausing.error, VmStopped)


def test_a_stop_while_pausing_raises_vm_stopped_and_frees_the_parked_vcpus() -> None:
    stop = StopLatch()
    parked, busy = FakeVcpu(), FakeVcpu()
    gate = PauseGate(as_vcpus([parked, busy]), stop)
    handler_done = threading.Event()

    def park_then_leave() -> None:
        gate.park_if_paused()
        gate.left()

    def busy_in_a_device_handler() -> None:
        handler_done.wait(JOIN_TIMEOUT)

    pausing = Call(gate.pause)
    assert wait_until(lambda: parked.kicks == 1)
    parked_thread = Call(park_then_leave)
    busy_thread = Call(busy_in_a_device_handler)
    assert not pausing.finished(QUIET_PERIOD)
    stop.request(GuestExit(ShutdownReason.HOST))
    assert pausing.finished() and isinstance(pausing.error, VmStopped)
    assert parked_thread.finished(), "a parked vCPU stayed parked after the VM stopped"
    handler_done.set()
    assert busy_thread.finished()


def test_a_vcpu_that_leaves_while_pausing_no_longer_counts() -> None:
    stop = StopLatch()
    staying, leaving = FakeVcpu(), FakeVcpu()
    gate = PauseGate(as_vcpus([staying, leaving]), stop)
    may_leave = threading.Event()

    def park_until_resumed() -> None:
        gate.park_if_paused()
        gate.left()

    def leave_without_parking() -> None:
        may_leave.wait(JOIN_TIMEOUT)
        gate.left()

    leaving_thread = Call(leave_without_parking)
    pausing = Call(gate.pause)
    assert wait_until(lambda: staying.kicks == 1)
    staying_thread = Call(park_until_resumed)
    assert not pausing.finished(QUIET_PERIOD)
    may_leave.set()
    assert pausing.finished() and pausing.error is None
    gate.resume()
    assert leaving_thread.finished() and staying_thread.finished()


def test_a_vcpu_failing_while_pausing_raises_vm_stopped() -> None:
    stop = StopLatch()
    vcpu = FakeVcpu()
    stop.watch(as_vcpu(vcpu))
    gate = PauseGate(as_vcpus([vcpu]), stop)
    may_fail = threading.Event()

    def fail_as_the_runner_does() -> None:
        may_fail.wait(JOIN_TIMEOUT)
        stop.fail(OSError("KVM_RUN failed"))
        gate.left()

    failing = Call(fail_as_the_runner_does)
    pausing = Call(gate.pause)
    assert not pausing.finished(QUIET_PERIOD)
    may_fail.set()
    assert pausing.finished() and isinstance(pausing.error, VmStopped)
    assert failing.finished()
