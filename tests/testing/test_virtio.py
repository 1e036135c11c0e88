"""VirtqueueDriver from the public kit: requests it makes are what the device-side queue pops."""

from __future__ import annotations

from asupermachine._core.memory import GuestMemory
from asupermachine._core.virtio.queue import Buffer
from asupermachine.testing import VirtqueueDriver


def test_a_request_pops_as_its_buffers_and_its_completion_shows_in_the_used_ring() -> None:
    with GuestMemory([(0, 1 << 20)]) as memory:
        driver = VirtqueueDriver(memory, size=8)
        head = driver.request([b"header"], [512])
        chain = driver.queue.pop()
        assert chain is not None and chain.head == head
        data = VirtqueueDriver.DATA
        assert chain.readable == [Buffer(data, 6)] and chain.writable == [Buffer(data + 6, 512)]
        driver.queue.add_used(chain.head, 512)
        assert driver.used() == [(head, 512)] and driver.queue.pop() is None
