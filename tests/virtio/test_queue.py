import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asupermachine import VirtqueueError
from asupermachine._core.memory import GuestMemory
from asupermachine._core.virtio.queue import (
    DESCRIPTOR,
    VIRTQ_AVAIL_F_NO_INTERRUPT,
    VIRTQ_DESC_F_INDIRECT,
    VIRTQ_DESC_F_NEXT,
    VIRTQ_DESC_F_WRITE,
    Buffer,
    Virtqueue,
)
from asupermachine.testing import VirtqueueDriver as Driver

AVAIL_RING, DATA, DESC_TABLE = Driver.AVAIL_RING, Driver.DATA, Driver.DESC_TABLE

RAM = 1 << 20


@pytest.fixture
def driver() -> Driver:
    with GuestMemory([(0, RAM)]) as memory:
        yield Driver(memory)


def test_empty_queue_pops_nothing(driver: Driver) -> None:
    assert driver.queue.pop() is None


def test_a_chain_splits_into_readable_then_writable_buffers(driver: Driver) -> None:
    driver.request([b"header", b"payload"], [512, 1])
    chain = driver.queue.pop()
    assert chain is not None and chain.head == 0
    assert [driver.memory.read(b.addr, b.length) for b in chain.readable] == [b"header", b"payload"]
    assert [b.length for b in chain.writable] == [512, 1] and chain.writable_bytes == 513
    assert driver.queue.pop() is None


def test_completions_appear_in_the_used_ring_in_order(driver: Driver) -> None:
    for _ in range(3):
        driver.request([b"x"], [4])
        chain = driver.queue.pop()
        assert chain is not None
        driver.queue.add_used(chain.head, 4)
    assert driver.used() == [(0, 4)] * 3


def test_indices_wrap_around_16_bits(driver: Driver) -> None:
    driver.queue.next_avail = driver.queue.next_used = driver.avail_idx = 0xFFFF
    driver.request([b"a"], [])
    chain = driver.queue.pop()
    assert chain is not None and driver.queue.next_avail == 0
    driver.queue.add_used(chain.head, 0)
    assert driver.queue.next_used == 0


def test_indirect_tables_are_followed(driver: Driver) -> None:
    table = 0x8000
    driver.memory.write(DATA, b"in")
    driver.descriptor(0, DATA, 2, VIRTQ_DESC_F_NEXT, 1, table=table)
    driver.descriptor(1, DATA + 16, 8, VIRTQ_DESC_F_WRITE, table=table)
    driver.descriptor(0, table, 2 * DESCRIPTOR.size, VIRTQ_DESC_F_INDIRECT)
    driver.make_available(0)
    chain = driver.queue.pop()
    assert chain is not None
    assert chain.readable == [Buffer(DATA, 2)] and chain.writable == [Buffer(DATA + 16, 8)]


def test_interrupt_suppression_follows_the_driver_flag(driver: Driver) -> None:
    assert not driver.queue.interrupt_suppressed()
    driver.memory.pack(struct.Struct("<H"), AVAIL_RING, VIRTQ_AVAIL_F_NO_INTERRUPT)
    assert driver.queue.interrupt_suppressed()


def _malformed(driver: Driver, setup: str) -> None:
    if setup == "head out of range":
        driver.make_available(16)
    elif setup == "loop":
        driver.descriptor(0, DATA, 1, VIRTQ_DESC_F_NEXT, 1)
        driver.descriptor(1, DATA, 1, VIRTQ_DESC_F_NEXT, 0)
        driver.make_available(0)
    elif setup == "next out of range":
        driver.descriptor(0, DATA, 1, VIRTQ_DESC_F_NEXT, 99)
        driver.make_available(0)
    elif setup == "buffer outside RAM":
        driver.descriptor(0, RAM - 4, 8)
        driver.make_available(0)
    elif setup == "address wraps":
        driver.descriptor(0, (1 << 64) - 4, 8)
        driver.make_available(0)
    elif setup == "readable after writable":
        driver.descriptor(0, DATA, 1, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1)
        driver.descriptor(1, DATA, 1)
        driver.make_available(0)
    elif setup == "indirect and next":
        driver.descriptor(0, 0x8000, 16, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, 1)
        driver.make_available(0)
    elif setup == "indirect length not a multiple of 16":
        driver.descriptor(0, 0x8000, 20, VIRTQ_DESC_F_INDIRECT)
        driver.make_available(0)
    elif setup == "empty indirect table":
        driver.descriptor(0, 0x8000, 0, VIRTQ_DESC_F_INDIRECT)
        driver.make_available(0)
    elif setup == "nested indirect":
        driver.descriptor(0, 0x9000, 16, VIRTQ_DESC_F_INDIRECT, table=0x8000)
        driver.descriptor(0, 0x8000, 16, VIRTQ_DESC_F_INDIRECT)
        driver.make_available(0)
    elif setup == "indirect loop":
        driver.descriptor(0, DATA, 1, VIRTQ_DESC_F_NEXT, 0, table=0x8000)
        driver.descriptor(0, 0x8000, 16, VIRTQ_DESC_F_INDIRECT)
        driver.make_available(0)
    elif setup == "oversize indirect table":
        driver.descriptor(0, 0x8000, 16 * 4096, VIRTQ_DESC_F_INDIRECT)
        driver.make_available(0)
    elif setup == "avail index far ahead":
        driver.memory.pack(struct.Struct("<H"), AVAIL_RING + 2, 500)


MALFORMED = [
    "head out of range", "loop", "next out of range", "buffer outside RAM", "address wraps",
    "readable after writable", "indirect and next", "indirect length not a multiple of 16",
    "empty indirect table", "nested indirect", "indirect loop", "oversize indirect table",
    "avail index far ahead",
]


@pytest.mark.parametrize("setup", MALFORMED)
def test_malformed_chains_raise_virtqueue_error(driver: Driver, setup: str) -> None:
    _malformed(driver, setup)
    with pytest.raises(VirtqueueError):
        driver.queue.pop()


@pytest.mark.parametrize(
    ("field", "value"),
    [("size", 3), ("size", 32), ("desc_table", 8), ("avail_ring", RAM - 2), ("used_ring", 0x4002)],
)
def test_a_bad_layout_is_refused_when_the_queue_is_made_ready(field: str, value: int) -> None:
    with GuestMemory([(0, RAM)]) as memory:
        queue = Virtqueue(memory, 16)
        queue.desc_table, queue.avail_ring, queue.used_ring = DESC_TABLE, AVAIL_RING, 0x4000
        setattr(queue, field, value)
        with pytest.raises(VirtqueueError):
            queue.validate()


@settings(max_examples=300, deadline=None)
@given(
    table=st.binary(min_size=16 * 16, max_size=16 * 16),
    heads=st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=8),
    indirect=st.binary(min_size=0, max_size=256),
)
def test_random_descriptor_tables_never_escape_guest_ram(table: bytes, heads: list[int], indirect: bytes) -> None:
    """Whatever the guest writes, pop() yields in-RAM buffers or raises VirtqueueError."""
    with GuestMemory([(0, RAM)]) as memory:
        driver = Driver(memory)
        memory.write(DESC_TABLE, table)
        memory.write(0x8000, indirect)
        for head in heads:
            driver.make_available(head)
        for _ in heads:
            try:
                chain = driver.queue.pop()
            except VirtqueueError:
                continue
            assert chain is not None
            for buffer in chain.readable + chain.writable:
                assert memory.contains(buffer.addr, buffer.length)
            assert len(chain.readable) + len(chain.writable) <= 16 + 1024
