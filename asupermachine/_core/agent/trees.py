"""Trees in and out of the guest as tar streams, over the agent's TAR_IN and TAR_OUT processes.

The agent writes and reads the tar itself (``guest/include/tar_tree.h``) rather
than running the image's ``tar``, which an image may not have. On the host,
:mod:`tarfile` makes and reads the stream in a worker thread, a chunk at a time
through the process's stdin or stdout: a tree is never held in memory whole,
and the event loop never waits on the disk.
"""

from __future__ import annotations

import errno
import io
import tarfile
from pathlib import Path
from typing import IO

import anyio
import anyio.abc

from ..._errors import AgentProtocolError, GuestFileError, VsockConnectionReset
from ..._tree.extract import TreeExtractor
from ...image.tar_stream import TarStreamError
from .process import Process
from .protocol import STDIN_CHUNK

# What of a failed transfer's stderr makes its error message (the agent writes one line).
STDERR_KEPT = 4096


async def upload(process: Process, source: Path, guest_path: str) -> None:
    """Stream ``source`` (a tree or one file; modes, symlinks and hardlinks kept) to a TAR_IN ``process``.

    :raises GuestFileError: if the guest could not write it, with the errno of its failure
    """
    async with process:  # leaving kills the guest's side
        try:
            await anyio.to_thread.run_sync(_pack, source, _StreamWriter(process.stdin))
            await process.stdin.aclose()
        except VsockConnectionReset:
            pass  # the guest's side failed and the agent hung up on the rest: _finish says why
        await _finish(process, guest_path)


def _pack(source: Path, writer: io.RawIOBase) -> None:
    with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT, bufsize=STDIN_CHUNK) as tar:
        tar.add(source, arcname=".")


async def download(process: Process, extractor: TreeExtractor, guest_path: str) -> None:
    """Extract what a TAR_OUT ``process`` streams with ``extractor``.

    :raises UnsafeGuestTree: if an entry would leave the target (the guest's side is killed)
    :raises GuestFileError: if the guest could not read its tree
    :raises AgentProtocolError: if the guest's stream is not a whole tar archive
    """
    async with process:
        try:
            reader = io.BufferedReader(_StreamReader(process.stdout), STDIN_CHUNK)
            await anyio.to_thread.run_sync(extractor.extract, reader)
        except (tarfile.TarError, TarStreamError) as error:
            await _drain(process.stdout)
            await _finish(process, guest_path)  # a failure in the guest, which cut the stream, says more
            raise AgentProtocolError(f"the guest's tar stream of {guest_path!r} is broken: {error}") from None
        await _drain(process.stdout)  # the end-of-archive padding
        await _finish(process, guest_path)


async def receive(process: Process, sink: IO[bytes], what: str) -> None:
    """Write what a LAYER ``process`` streams to ``sink`` (a worker thread writes); ``what`` names it in errors.

    :raises GuestFileError: if the guest could not write it
    """
    async with process:
        async for chunk in process.stdout:
            await anyio.to_thread.run_sync(sink.write, chunk)
        await _finish(process, what)


async def _drain(stream: anyio.abc.ByteReceiveStream) -> None:
    async for _ in stream:
        pass


async def _finish(process: Process, guest_path: str) -> None:
    """Wait for the guest's side; raises :class:`GuestFileError` with what it said if it failed."""
    status = await process.wait()
    if status.returncode == 0:
        return
    said = bytearray()
    async for chunk in process.stderr:
        said += chunk[: STDERR_KEPT - len(said)]
    detail = said.decode(errors="replace").strip() or f"the agent's side ended with {status}"
    code = status.returncode if status.returncode and status.returncode > 0 else errno.EIO
    raise GuestFileError(f"guest path {guest_path!r}: {detail}", code)


class _StreamReader(io.RawIOBase):
    """A blocking file reading an anyio byte stream, for a worker thread."""

    def __init__(self, stream: anyio.abc.ByteReceiveStream) -> None:
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        try:
            data = anyio.from_thread.run(self._stream.receive, len(buffer))
        except anyio.EndOfStream:
            return 0
        buffer[: len(data)] = data
        return len(data)


class _StreamWriter(io.RawIOBase):
    """A blocking file writing an anyio byte stream, for a worker thread."""

    def __init__(self, stream: anyio.abc.ByteSendStream) -> None:
        self._stream = stream

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        anyio.from_thread.run(self._stream.send, bytes(data))
        return len(data)
