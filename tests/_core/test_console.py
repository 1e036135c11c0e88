import threading

import anyio
import pytest

from asupermachine._core.console import Console

pytestmark = pytest.mark.anyio


async def test_chunks_fed_from_another_thread_arrive_in_order() -> None:
    console = Console()

    def produce() -> None:
        for i in range(200):
            console.feed(f"line {i}\n".encode())
        console.close()

    thread = threading.Thread(target=produce)
    with anyio.fail_after(10):
        thread.start()
        lines = [line async for line in console.lines()]
    thread.join()
    assert lines == [f"line {i}" for i in range(200)]
    await console.release()


async def test_an_unread_console_drops_the_oldest_bytes_and_counts_them() -> None:
    console = Console(capacity=10)
    console.feed(b"0123456789")
    console.feed(b"abcde")
    assert console.dropped == 5
    assert await console.receive() == b"56789abcde"
    assert console.tail().endswith("abcde")
    await console.release()


async def test_release_ends_a_waiting_reader() -> None:
    console = Console()
    received: list[bytes] = []

    async def read_all() -> None:
        received.extend([chunk async for chunk in console])

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(read_all)
            await anyio.sleep(0.05)
            console.feed(b"last words")
            await anyio.sleep(0.05)
            await console.release()
    assert b"".join(received) == b"last words"


async def test_input_waits_for_room_instead_of_dropping() -> None:
    console = Console()
    accepted = bytearray()
    room = [3]

    def sink(data: bytes) -> int:
        n = min(room[0], len(data))
        accepted.extend(data[:n])
        room[0] -= n
        return n

    console.attach_input(sink)

    async def drain_later() -> None:
        await anyio.sleep(0.05)
        room[0] = 100

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(drain_later)
            await console.send(b"hello world")
    assert accepted == b"hello world"
    await console.release()
