"""memory_stream_pair: two connected byte streams that behave like a socket pair's ends."""

from __future__ import annotations

import anyio
import pytest

from asupermachine.testing import memory_stream_pair

pytestmark = pytest.mark.anyio


async def test_bytes_cross_in_order_and_reads_take_at_most_max_bytes() -> None:
    a, b = memory_stream_pair()
    await a.send(b"hello")
    await a.send(b" world")
    assert await b.receive(3) == b"hel"
    assert await b.receive() == b"lo"
    assert await b.receive() == b" world"
    await b.send(b"back")
    assert await a.receive() == b"back"


async def test_both_ends_may_send_before_either_reads() -> None:
    a, b = memory_stream_pair()
    with anyio.fail_after(1):
        await a.send(b"x" * (1 << 20))
        await b.send(b"y" * (1 << 20))
    assert len(await b.receive(1 << 21)) == 1 << 20


async def test_eof_and_close_reach_the_peer() -> None:
    a, b = memory_stream_pair()
    await a.send_eof()
    with pytest.raises(anyio.EndOfStream):
        await b.receive()
    await b.send(b"still open this way")
    assert await a.receive() == b"still open this way"
    await a.aclose()
    with pytest.raises(anyio.BrokenResourceError):
        await b.send(b"to nobody")
    with pytest.raises(anyio.ClosedResourceError):
        await a.receive()
