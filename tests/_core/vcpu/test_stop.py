"""StopLatch: the first reason to stop wins, and every watched vCPU is kicked (no KVM)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from typing import cast

import pytest

from asupermachine import GuestExit, ShutdownReason
from asupermachine._core.kvm import VcpuFd
from asupermachine._core.vcpu.stop import StopLatch

JOIN_TIMEOUT = 10.0  # seconds
CONTENDERS = 32


class FakeVcpu:
    """Stands in for :class:`VcpuFd`: counts kicks (StopLatch calls nothing else)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.kicks = 0

    def kick(self) -> None:
        with self._lock:
            self.kicks += 1


def watched(latch: StopLatch, count: int) -> list[FakeVcpu]:
    vcpus = [FakeVcpu() for _ in range(count)]
    for vcpu in vcpus:
        latch.watch(cast(VcpuFd, vcpu))
    return vcpus


@pytest.fixture
def eager_thread_switches() -> Iterator[None]:
    """Switch threads as often as CPython allows, so that races show up."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def race(contenders: list[Callable[[], None]]) -> None:
    """Start every contender at the same moment, each on its own thread, and wait for all."""
    start = threading.Barrier(len(contenders))
    errors: list[BaseException] = []

    def contend(contender: Callable[[], None]) -> None:
        try:
            start.wait(JOIN_TIMEOUT)
            contender()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=contend, args=(contender,), daemon=True) for contender in contenders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT)
    assert not any(thread.is_alive() for thread in threads), "a contender did not finish"
    assert errors == []


def test_a_new_latch_is_not_stopped() -> None:
    latch = StopLatch()
    assert not latch.stopped
    assert latch.result is None and latch.failure is None


def test_a_request_stops_the_vm_with_its_result() -> None:
    latch = StopLatch()
    guest_exit = GuestExit(ShutdownReason.EXIT, 3)
    latch.request(guest_exit)
    assert latch.stopped and latch.result is guest_exit and latch.failure is None


def test_the_first_request_wins() -> None:
    latch = StopLatch()
    first = GuestExit(ShutdownReason.POWER_OFF)
    latch.request(first)
    latch.request(GuestExit(ShutdownReason.RESET))
    assert latch.result is first


def test_a_failure_stops_the_vm_with_its_error() -> None:
    latch = StopLatch()
    error = OSError("KVM_RUN failed")
    latch.fail(error)
    assert latch.stopped and latch.failure is error and latch.result is None


def test_the_first_failure_wins() -> None:
    latch = StopLatch()
    first = OSError("first")
    latch.fail(first)
    latch.fail(OSError("second"))
    assert latch.failure is first


def test_a_failure_after_a_request_keeps_the_request() -> None:
    latch = StopLatch()
    guest_exit = GuestExit(ShutdownReason.EXIT, 0)
    latch.request(guest_exit)
    latch.fail(OSError("a vCPU failed on the way out"))
    assert latch.result is guest_exit and latch.failure is None


def test_a_request_after_a_failure_keeps_the_failure() -> None:
    latch = StopLatch()
    error = OSError("KVM_RUN failed")
    latch.fail(error)
    latch.request(GuestExit(ShutdownReason.HOST))
    assert latch.failure is error and latch.result is None


def test_a_request_kicks_every_watched_vcpu() -> None:
    latch = StopLatch()
    vcpus = watched(latch, 3)
    latch.request(GuestExit(ShutdownReason.HOST))
    assert [vcpu.kicks for vcpu in vcpus] == [1, 1, 1]


def test_a_failure_kicks_every_watched_vcpu() -> None:
    latch = StopLatch()
    vcpus = watched(latch, 3)
    latch.fail(OSError("KVM_RUN failed"))
    assert [vcpu.kicks for vcpu in vcpus] == [1, 1, 1]


def test_nothing_is_kicked_before_a_stop() -> None:
    latch = StopLatch()
    vcpus = watched(latch, 2)
    assert not latch.stopped
    assert [vcpu.kicks for vcpu in vcpus] == [0, 0]


@pytest.mark.usefixtures("eager_thread_switches")
def test_concurrent_requests_settle_on_one_of_them() -> None:
    latch = StopLatch()
    vcpus = watched(latch, 4)
    requests = [GuestExit(ShutdownReason.EXIT, status) for status in range(CONTENDERS)]
    seen: list[GuestExit | None] = [None] * CONTENDERS

    def contender(index: int) -> Callable[[], None]:
        def request() -> None:
            latch.request(requests[index])
            seen[index] = latch.result

        return request

    race([contender(index) for index in range(CONTENDERS)])
    winner = latch.result
    assert any(winner is request for request in requests)
    # Once set, the result never changed: every contender saw the same one after its request.
    assert all(result is winner for result in seen)
    assert all(vcpu.kicks >= 1 for vcpu in vcpus)


@pytest.mark.usefixtures("eager_thread_switches")
def test_concurrent_requests_and_failures_settle_on_exactly_one_reason() -> None:
    latch = StopLatch()
    vcpus = watched(latch, 4)
    requests = [GuestExit(ShutdownReason.EXIT, status) for status in range(CONTENDERS // 2)]
    failures = [OSError(f"vCPU {index}") for index in range(CONTENDERS // 2)]
    seen: list[tuple[GuestExit | None, BaseException | None]] = []
    seen_lock = threading.Lock()

    def remember() -> None:
        with seen_lock:
            seen.append((latch.result, latch.failure))

    def requester(guest_exit: GuestExit) -> Callable[[], None]:
        def request() -> None:
            latch.request(guest_exit)
            remember()

        return request

    def failer(error: OSError) -> Callable[[], None]:
        def fail() -> None:
            latch.fail(error)
            remember()

        return fail

    race([requester(guest_exit) for guest_exit in requests] + [failer(error) for error in failures])
    outcome = (latch.result, latch.failure)
    assert (outcome[0] is None) != (outcome[1] is None), f"not exactly one reason: {outcome}"
    assert all(result is outcome[0] and failure is outcome[1] for result, failure in seen)
    assert all(vcpu.kicks >= 1 for vcpu in vcpus)
