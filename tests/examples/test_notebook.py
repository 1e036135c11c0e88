"""The notebook example on a real IPython kernel, and a kernel that shuts down with a VM left open."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import nbformat
import psutil
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

from asupermachine import Snapshot

from .processes import alive, describe, ended, kvm_fds

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "examples" / "notebook.ipynb"
LEAVE_OPEN = Path(__file__).with_name("leave_open.ipynb")
KERNEL_NAME = "asupermachine-test"
# Bounds that only turn a hang into a failure.
CELL_TIMEOUT = 300
# The kernel is killed (SIGTERM, then SIGKILL) only after this: a kernel that exits
# by itself (status 0) has not been helped.
SHUTDOWN_WAIT = 120.0


@pytest.fixture
def anyio_backend() -> str:
    """Jupyter's client side is asyncio (zmq.asyncio)."""
    return "asyncio"


@asynccontextmanager
async def kernel(tmp_path: Path) -> AsyncIterator[AsyncKernelManager]:
    """An IPython kernel on this interpreter (whatever kernels Jupyter knows elsewhere)."""
    spec_dir = tmp_path / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "asupermachine tests",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    km = AsyncKernelManager(
        kernel_name=KERNEL_NAME,
        kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")]),
        shutdown_wait_time=SHUTDOWN_WAIT,
    )
    await km.start_kernel(cwd=str(tmp_path))
    try:
        yield km
    finally:
        if await km.is_alive():
            await km.shutdown_kernel(now=True)


def kernel_process(km: AsyncKernelManager) -> Any:
    process = km.provisioner.process  # type: ignore[union-attr]
    assert psutil.Process(process.pid).cmdline()[0] == sys.executable
    return process


def stop_channels(client: NotebookClient) -> None:
    """The client keeps its channels (zmq sockets) open when it does not own the kernel."""
    if client.kc is not None:
        client.kc.stop_channels()


def printed(cell: Any) -> str:
    """What a code cell printed; fails on an error output, showing its traceback."""
    errors = [output for output in cell.outputs if output.output_type == "error"]
    assert not errors, "\n".join(errors[0].traceback)
    return "".join(output.text for output in cell.outputs if output.output_type == "stream" and output.name == "stdout")


@pytest.mark.kvm
@pytest.mark.anyio
async def test_notebook_starts_a_vm_runs_uname_moves_a_file_and_closes_it(tmp_path: Path, baked: Snapshot) -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    async with kernel(tmp_path) as km:
        process = kernel_process(km)
        client = NotebookClient(nb, km=km, timeout=CELL_TIMEOUT)
        await client.async_execute()
        await km.shutdown_kernel()
        stop_channels(client)
        assert process.returncode == 0, "the kernel had to be killed"

    started, uname, file, closed = (printed(cell) for cell in nb.cells if cell.cell_type == "code")
    assert started.startswith("started ") and started.split()[1]
    assert uname.startswith("Linux "), uname
    assert file == "hello from the host\n\n"
    assert closed == "closed: True\n"


@pytest.mark.kvm
@pytest.mark.anyio
async def test_kernel_with_a_vm_left_open_shuts_down_by_itself_leaving_no_process(
    tmp_path: Path, baked: Snapshot
) -> None:
    nb = nbformat.read(LEAVE_OPEN, as_version=4)
    async with kernel(tmp_path) as km:
        process = kernel_process(km)
        client = NotebookClient(nb, km=km, timeout=CELL_TIMEOUT)
        # The client does not own the kernel, so leaving this block leaves it running.
        async with client.async_setup_kernel():
            for index, cell in enumerate(nb.cells):
                await client.async_execute_cell(cell, index)
        assert [printed(cell) for cell in nb.cells if cell.cell_type == "code"] == ["running\n\n"]
        assert await km.is_alive()
        assert kvm_fds(process.pid) > 0, "the VM runs in the kernel's process"
        descendants = psutil.Process(process.pid).children(recursive=True)

        await km.shutdown_kernel()
        stop_channels(client)

    assert process.returncode not in (-signal.SIGTERM, -signal.SIGKILL), "the kernel had to be killed"
    assert process.returncode == 0
    with anyio.move_on_after(SHUTDOWN_WAIT):
        await ended(descendants)
    assert [describe(child) for child in descendants if alive(child)] == []
