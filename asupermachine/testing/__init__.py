"""Fakes for testing code that talks to a guest, without a guest (like ``trio.testing``).

- :class:`FakeAgent` speaks the guest agent's protocol from Python: commands are
  callables, files a dict. :meth:`FakeAgent.connect` gives the host end of a new
  in-memory connection to it, to hand to what would take an agent connection
  (:meth:`Process.start <asupermachine.Process.start>`).
- :func:`memory_stream_pair` is two connected in-memory byte streams.
- :class:`VirtqueueDriver` plays a guest's virtio driver on a split virtqueue, to
  drive a device model request by request.

Nothing here needs ``/dev/kvm``, and nothing depends on timing::

    import anyio
    from asupermachine import Process
    from asupermachine.testing import FakeAgent

    def shout(argv, env, workdir, user, stdin):
        return 0, stdin.upper(), b""

    async def main():
        agent = FakeAgent(commands={"shout": shout})
        async with anyio.create_task_group() as tasks:
            process, decoder = await Process.start(
                agent.connect(tasks), ["shout"], env=None, workdir="", user=""
            )
            tasks.start_soon(process.pump, decoder)
            async with process:
                await process.stdin.send(b"hi")
                await process.stdin.aclose()
                assert await process.stdout.receive() == b"HI"
                assert (await process.wait()).exit_code == 0

    anyio.run(main)
"""

from ._agent import CommandHandler as CommandHandler
from ._agent import CommandResult as CommandResult
from ._agent import FakeAgent as FakeAgent
from ._streams import MemoryByteStream as MemoryByteStream
from ._streams import memory_stream_pair as memory_stream_pair
from ._virtio import VirtqueueDriver as VirtqueueDriver
