"""A connection the guest opened outlives a long silence of the host: Debian 12's passt reset it after 24 s."""

from __future__ import annotations

import anyio
import anyio.abc
import pytest

from asupermachine import Machine, Network, Snapshot
from asupermachine._core.net.passt_program import find_passt
from tests.support.exec_output import stdout_of

pytestmark = pytest.mark.anyio
DEADLINE = 600
SILENCE = 60.0
"""Seconds the host server sends nothing after reading the request: well past passt's old 24 s."""
BODY = b"answered after a minute of silence\n"


async def answer_late(stream: anyio.abc.SocketStream) -> None:
    """Read an HTTP request, say nothing for SILENCE seconds, then answer it."""
    async with stream:
        request = b""
        while b"\r\n\r\n" not in request:
            request += await stream.receive()
        await anyio.sleep(SILENCE)
        header = f"HTTP/1.0 200 OK\r\nContent-Length: {len(BODY)}\r\nContent-Type: text/plain\r\n\r\n"
        await stream.send(header.encode() + BODY)


# A minute of waiting is the same under trio.
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_guest_connection_idle_for_a_minute_gets_its_answer(baked: Snapshot) -> None:
    assert find_passt().fixed
    with anyio.fail_after(DEADLINE):
        async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
            port = listener.extra(anyio.abc.SocketAttribute.local_port)
            async with anyio.create_task_group() as server:
                server.start_soon(listener.serve, answer_late)
                async with Machine.restore(baked, network=Network(allow_host_loopback=True)) as vm:
                    url = f"http://host.internal:{port}/late"
                    # busybox wget waits 900 s for data by default (its -T crashes it in this image).
                    fetched = await vm.exec(["wget", "-q", "-O-", url])
                server.cancel_scope.cancel()
    assert stdout_of(fetched) == BODY
