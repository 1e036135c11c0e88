"""A RUN step: its command in a microVM of the step's parent image, its root's changes as the step's layer."""

from __future__ import annotations

from pathlib import Path

import anyio
import anyio.abc

from .._core.virtio.blk import Disk
from .._errors import BuildError
from .._machine import Machine
from .._network import NetworkOption
from .._volume import Volume
from ..image.image import Image
from .dockerfile import Instruction
from .metadata import Scope
from .progress import BuildProgress

OUTPUT_TAIL = 4096
"""Bytes of a failed step's output its :class:`BuildError` carries."""
CHANGES_DISK_MIB = 16 << 10
"""The sparse ext4 disk a step's changes go to (it takes room on the host only as the step writes)."""


class _StepOutput:
    """A step's stdout and stderr, shown line by line as they come; the last bytes kept for an error."""

    def __init__(self, progress: BuildProgress) -> None:
        self._progress = progress
        self.tail = b""

    async def pump(self, stream: anyio.abc.ByteReceiveStream) -> None:
        pending = b""
        async for chunk in stream:
            self.tail = (self.tail + chunk)[-OUTPUT_TAIL:]
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            for line in lines:
                self._progress.output(line.decode(errors="replace"))
        if pending:
            self._progress.output(pending.decode(errors="replace"))


async def run_step(
    image: Image, scope: Scope, instruction: Instruction, layer: Path, progress: BuildProgress, *,
    network: NetworkOption, memory_mib: int,
) -> None:
    """Run ``instruction`` in a VM of ``image`` as ``scope`` says, and write its changes to ``layer``.

    :raises BuildError: if the command fails, with its exit status and the tail of its output
    """
    argv = scope.command(instruction)
    user = str(scope.image.config.get("User") or "")
    changes = await Volume.create(layer.with_name("changes.ext4"), size_mib=CHANGES_DISK_MIB)
    try:
        await _run(image, scope, instruction, argv, user, layer, progress, changes.disk, network, memory_mib)
    finally:
        changes.path.unlink()


async def _run(
    image: Image, scope: Scope, instruction: Instruction, argv: list[str], user: str, layer: Path,
    progress: BuildProgress, changes: Disk, network: NetworkOption, memory_mib: int,
) -> None:
    async with Machine.start(image, network=network, memory_mib=memory_mib, volume_slots=0, changes=changes) as vm:
        output = _StepOutput(progress)
        process = await vm.spawn(argv, env=scope.variables, workdir=scope.workdir, user=user)
        async with process:
            await process.stdin.aclose()
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(output.pump, process.stdout)
                tasks.start_soon(output.pump, process.stderr)
            status = await process.wait()
        if status.returncode != 0:
            tail = output.tail.decode(errors="replace")
            raise BuildError(
                f"Dockerfile line {instruction.line}: {instruction} did not complete successfully: {status}",
                step=str(instruction), exit_status=status.returncode, output=tail,
            )
        await vm.export_changes(layer)
