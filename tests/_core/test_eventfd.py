"""EventFd: signals cross threads, are not lost before a wait, and closing wakes the waiter."""

from __future__ import annotations

import os

import anyio
import pytest
from anyio.abc import TaskStatus

from asupermachine._core.eventfd import EventFd

pytestmark = pytest.mark.anyio


def open_eventfds() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[eventfd]"
        except FileNotFoundError:
            pass  # the listing's own descriptor
    return count


async def wait_for(eventfd: EventFd, outcome: list[str], *, task_status: TaskStatus[None]) -> None:
    task_status.started()
    try:
        await eventfd.wait()
    except anyio.ClosedResourceError:
        outcome.append("closed")
    else:
        outcome.append("signalled")


async def test_a_signal_before_the_wait_is_not_lost() -> None:
    eventfd = EventFd()
    try:
        eventfd.signal()
        with anyio.fail_after(5):
            await eventfd.wait()
    finally:
        eventfd.close()


async def test_a_wait_takes_every_signal_so_far() -> None:
    eventfd = EventFd()
    try:
        eventfd.signal()
        eventfd.signal()
        with anyio.fail_after(5):
            await eventfd.wait()
        with anyio.move_on_after(0.05) as timeout:
            await eventfd.wait()
        assert timeout.cancelled_caught
    finally:
        eventfd.close()


async def test_a_signal_from_another_thread_wakes_the_waiter() -> None:
    eventfd = EventFd()
    outcome: list[str] = []
    try:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tasks:
                await tasks.start(wait_for, eventfd, outcome)
                await anyio.wait_all_tasks_blocked()
                await anyio.to_thread.run_sync(eventfd.signal)
    finally:
        eventfd.close()
    assert outcome == ["signalled"]


async def test_a_write_to_the_raw_fd_wakes_the_waiter_as_kvm_does() -> None:
    eventfd = EventFd()
    try:
        os.eventfd_write(eventfd.fileno(), 1)
        with anyio.fail_after(5):
            await eventfd.wait()
    finally:
        eventfd.close()


async def test_closing_wakes_the_waiter_with_closed_resource_error() -> None:
    eventfd = EventFd()
    outcome: list[str] = []
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            await tasks.start(wait_for, eventfd, outcome)
            await anyio.wait_all_tasks_blocked()
            eventfd.close()
    assert outcome == ["closed"]


async def test_closing_wins_over_a_signal_the_waiter_has_not_taken_yet() -> None:
    eventfd = EventFd()
    outcome: list[str] = []
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            await tasks.start(wait_for, eventfd, outcome)
            await anyio.wait_all_tasks_blocked()
            eventfd.signal()
            eventfd.close()
    assert outcome == ["closed"]


async def test_after_close_a_wait_raises_and_a_signal_is_ignored() -> None:
    eventfd = EventFd()
    eventfd.close()
    eventfd.close()
    eventfd.signal()
    assert eventfd.fileno() == -1
    with pytest.raises(anyio.ClosedResourceError):
        await eventfd.wait()


async def test_a_cancelled_wait_leaves_the_eventfd_usable() -> None:
    eventfd = EventFd()
    try:
        with anyio.move_on_after(0.01):
            await eventfd.wait()
        eventfd.signal()
        with anyio.fail_after(5):
            await eventfd.wait()
    finally:
        eventfd.close()


async def test_closing_from_a_worker_thread_with_no_waiter() -> None:
    eventfd = EventFd()
    await anyio.to_thread.run_sync(eventfd.close)
    assert eventfd.fileno() == -1


async def test_closed_eventfds_leave_no_fd_open() -> None:
    before = open_eventfds()
    eventfds = [EventFd() for _ in range(8)]
    assert open_eventfds() == before + 8
    outcome: list[str] = []
    async with anyio.create_task_group() as tasks:
        await tasks.start(wait_for, eventfds[0], outcome)
        await anyio.wait_all_tasks_blocked()
        for eventfd in eventfds:
            eventfd.signal()
            eventfd.close()
    assert open_eventfds() == before


async def watch(eventfd: EventFd, count: int, outcome: list[str], *, task_status: TaskStatus[None]) -> None:
    """Take ``count`` wake-ups inside :meth:`EventFd.watched`, noting each, or how the watch ended."""
    try:
        async with eventfd.watched() as next_signal:
            task_status.started()
            for _ in range(count):
                await next_signal()
                outcome.append("signalled")
    except anyio.ClosedResourceError:
        outcome.append("closed")


async def test_a_watcher_is_woken_by_signals_from_its_loop_other_threads_and_kvm_and_none_is_lost() -> None:
    eventfd = EventFd()
    outcome: list[str] = []
    try:
        eventfd.signal()  # before the watch: not lost
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tasks:
                await tasks.start(watch, eventfd, 4, outcome)
                for wake in (
                    eventfd.signal, lambda: anyio.to_thread.run_sync(eventfd.signal),
                    lambda: os.eventfd_write(eventfd.fileno(), 1),
                ):
                    await anyio.wait_all_tasks_blocked()
                    before = len(outcome)
                    if (pending := wake()) is not None:
                        await pending
                    while len(outcome) == before:
                        await anyio.sleep(0.01)
        assert outcome == ["signalled"] * 4
        # The watch is over: plain waits work again.
        eventfd.signal()
        with anyio.fail_after(5):
            await eventfd.wait()
    finally:
        eventfd.close()


async def test_a_signal_on_the_watchers_own_loop_does_not_go_through_the_kernel(anyio_backend: str) -> None:
    eventfd = EventFd()
    outcome: list[str] = []
    try:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tasks:
                await tasks.start(watch, eventfd, 1, outcome)
                await anyio.wait_all_tasks_blocked()
                eventfd.signal()
                if anyio_backend == "asyncio":
                    with pytest.raises(BlockingIOError):
                        os.eventfd_read(eventfd.fileno())  # the counter is untouched
        assert outcome == ["signalled"]
    finally:
        eventfd.close()


async def test_closing_wakes_a_watcher_and_a_second_watcher_is_refused() -> None:
    eventfd = EventFd()
    outcome: list[str] = []
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            await tasks.start(watch, eventfd, 1, outcome)
            await anyio.wait_all_tasks_blocked()
            with pytest.raises(anyio.BusyResourceError):
                async with eventfd.watched() as next_signal:
                    await next_signal()
            eventfd.close()
    assert outcome == ["closed"]
