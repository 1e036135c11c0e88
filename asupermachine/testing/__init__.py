"""Fakes for testing code that talks to a guest, without a guest (like ``trio.testing``).

- :func:`fake_machine` gives a real :class:`~asupermachine.Machine` whose guest is
  played by a :class:`FakeAgent` (as httpx's ``MockTransport`` stands in for a
  server): hand it to the code under test in place of one from a runtime.
- :class:`FakeAgent` speaks the guest agent's protocol from Python: commands are
  callables, files a dict. :meth:`FakeAgent.connect` gives the host end of a new
  in-memory connection to it.
- :func:`memory_stream_pair` is two connected in-memory byte streams.
- :class:`VirtqueueDriver` plays a guest's virtio driver on a split virtqueue, to
  drive a device model request by request.

Nothing here needs ``/dev/kvm``, and nothing depends on timing::

    import anyio
    from asupermachine import Machine
    from asupermachine.testing import FakeAgent, fake_machine

    async def shout_in(vm: Machine, text: bytes) -> bytes:    # the code under test
        return (await vm.exec(["shout"], stdin=text)).stdout

    def shout(argv, env, workdir, user, stdin):               # the guest's program, faked
        return 0, stdin.upper(), b""

    async def main():
        async with fake_machine(FakeAgent(commands={"shout": shout})) as vm:
            assert await shout_in(vm, b"hi") == b"HI"

    anyio.run(main)
"""

from ._agent import CommandHandler as CommandHandler
from ._agent import CommandResult as CommandResult
from ._agent import FakeAgent as FakeAgent
from ._guest import fake_machine as fake_machine
from ._streams import MemoryByteStream as MemoryByteStream
from ._streams import memory_stream_pair as memory_stream_pair
from ._virtio import VirtqueueDriver as VirtqueueDriver
