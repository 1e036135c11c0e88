"""examples/web_service.py served for real (uvicorn on asyncio, hypercorn on trio), driven over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc
import httpx
import psutil
import pytest

from asupermachine import Snapshot

from .processes import alive, describe, ended, kvm_fds

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "web_service.py"
# Bounds that only turn a hang into a failure: nothing here is expected to come close.
STARTUP_DEADLINE = 120.0
EXIT_DEADLINE = 120.0
REQUEST_TIMEOUT = 180.0
SANDBOXES = 2
EXECS_PER_SANDBOX = 3
EXPIRING_TIMEOUT = 5.0


@dataclass(frozen=True)
class ServerKind:
    backend: str
    command: Callable[[int], list[str]]
    clean_exit: int
    """The exit status of a clean shutdown on SIGTERM."""


SERVERS = {
    "uvicorn-asyncio": ServerKind("asyncio", lambda port: [
        sys.executable, "-m", "uvicorn", "--loop", "asyncio",
        "--host", "127.0.0.1", "--port", str(port), "examples.web_service:app",
    ], clean_exit=-signal.SIGTERM),  # uvicorn re-raises the signal once it has shut down
    # hypercorn runs the app in a worker process it spawns: the leak checks cover both.
    "hypercorn-trio": ServerKind("trio", lambda port: [
        sys.executable, "-m", "hypercorn", "--worker-class", "trio",
        "--bind", f"127.0.0.1:{port}", f"{EXAMPLE}:app",
    ], clean_exit=0),
}


@pytest.fixture(params=sorted(SERVERS))
def server_kind(request: pytest.FixtureRequest) -> ServerKind:
    return SERVERS[request.param]


@pytest.fixture
def anyio_backend(server_kind: ServerKind) -> str:
    """The test's client runs on the same backend as the server it drives."""
    return server_kind.backend


@dataclass
class Server:
    process: anyio.abc.Process
    output: list[str] = field(default_factory=list)
    output_closed: anyio.Event = field(default_factory=anyio.Event)
    descendants: list[psutil.Process] = field(default_factory=list)

    def text(self) -> str:
        return "".join(self.output)

    def kvm_fds(self) -> dict[int, int]:
        """The fds on KVM objects the server and each of its workers hold, by pid."""
        server = psutil.Process(self.process.pid)
        return {process.pid: kvm_fds(process.pid) for process in [server, *server.children(recursive=True)]}

    async def stop(self) -> int:
        """SIGTERM, as a service manager stops it; its exit status once it and its output are gone."""
        self.descendants = psutil.Process(self.process.pid).children(recursive=True)
        self.process.send_signal(signal.SIGTERM)
        with anyio.fail_after(EXIT_DEADLINE):
            status = await self.process.wait()
            await self.output_closed.wait()  # nothing left behind holds the server's stdout
        with anyio.move_on_after(EXIT_DEADLINE):  # the test names any that is still running
            await ended(self.descendants)
        return status


@asynccontextmanager
async def serve(command: Sequence[str], port: int) -> AsyncIterator[Server]:
    """Run ``command`` until it says it listens on ``port``; kill it if the test leaves it running."""
    process = await anyio.open_process(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    server = Server(process)
    listening = anyio.Event()
    marker = f"running on http://127.0.0.1:{port}"

    async def read_output() -> None:
        assert process.stdout is not None
        async for chunk in process.stdout:
            server.output.append(chunk.decode(errors="replace"))
            if marker in server.text().lower():
                listening.set()
        server.output_closed.set()
        listening.set()

    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(read_output)
            try:
                with anyio.fail_after(STARTUP_DEADLINE):
                    await listening.wait()
                assert process.returncode is None, f"the server exited:\n{server.text()}"
                yield server
            finally:
                if process.returncode is None:
                    process.kill()
                tasks.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await process.aclose()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def identify(n: int) -> dict[str, object]:
    """An exec whose output says which request and which guest ran it (the id is the hostname)."""
    return {"argv": ["sh", "-c", 'echo "$1"; cat; hostname', "sh", str(n)], "stdin": f"stdin {n}\n"}


@pytest.mark.kvm
@pytest.mark.anyio
async def test_sandboxes_run_commands_and_files_over_http_then_all_close(
    server_kind: ServerKind, baked: Snapshot
) -> None:
    port = free_port()
    async with serve(server_kind.command(port), port) as server:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=REQUEST_TIMEOUT) as http:
            assert (await http.get("/health")).json() == {"machines": 0}

            ids: list[str] = []

            async def create() -> None:
                response = await http.post("/sandboxes", json={})
                assert response.status_code == 201, response.text
                ids.append(response.json()["id"])

            async with anyio.create_task_group() as tasks:
                for _ in range(SANDBOXES):
                    tasks.start_soon(create)
            assert len(set(ids)) == SANDBOXES
            assert sorted((await http.get("/sandboxes")).json()) == sorted(ids)
            assert (await http.get("/health")).json() == {"machines": SANDBOXES}
            assert max(server.kvm_fds().values()) > 0  # the count below would notice a leak

            outputs: dict[tuple[str, int], dict[str, object]] = {}

            async def run(vm_id: str, n: int) -> None:
                response = await http.post(f"/sandboxes/{vm_id}/exec", json=identify(n))
                assert response.status_code == 200, response.text
                outputs[vm_id, n] = response.json()

            async with anyio.create_task_group() as tasks:
                for vm_id in ids:
                    for n in range(EXECS_PER_SANDBOX):
                        tasks.start_soon(run, vm_id, n)
            for (vm_id, n), output in outputs.items():
                assert output == {"exit_code": 0, "signal": None, "stdout": f"{n}\nstdin {n}\n{vm_id}\n", "stderr": ""}
            assert len(outputs) == SANDBOXES * EXECS_PER_SANDBOX

            first, second = ids[0], ids[1]
            exec_url = f"/sandboxes/{first}/exec"
            failed = (await http.post(exec_url, json={"argv": ["sh", "-c", "echo no >&2; exit 3"]})).json()
            assert (failed["exit_code"], failed["signal"], failed["stderr"]) == (3, None, "no\n")
            killed = (await http.post(exec_url, json={"argv": ["sh", "-c", "kill -9 $$"]})).json()
            assert (killed["exit_code"], killed["signal"]) == (None, signal.SIGKILL)
            missing = await http.post(exec_url, json={"argv": ["no-such-program"]})
            assert missing.status_code == 422 and "error" in missing.json(), missing.text
            overran = await http.post(exec_url, json={"argv": ["sleep", "600"], "timeout": 1})
            assert overran.status_code == 504 and "error" in overran.json(), overran.text
            malformed = await http.post(exec_url, json={"argv": "uname"})
            assert malformed.status_code == 422, malformed.text

            data = bytes(range(256)) * 64
            put = await http.put(f"/sandboxes/{first}/files/tmp/data.bin", content=data)
            assert put.status_code == 204, put.text
            got = await http.get(f"/sandboxes/{first}/files/tmp/data.bin")
            assert (got.status_code, got.content) == (200, data)
            listed = (await http.post(f"/sandboxes/{first}/exec", json={"argv": ["wc", "-c", "/tmp/data.bin"]})).json()
            assert listed["stdout"].split() == [str(len(data)), "/tmp/data.bin"]
            elsewhere = await http.get(f"/sandboxes/{second}/files/tmp/data.bin")
            assert elsewhere.status_code == 404, "sandboxes share no files"
            assert "error" in elsewhere.json()

            unknown = await http.post("/sandboxes/no-such-id/exec", json={"argv": ["true"]})
            assert unknown.status_code == 404
            assert "error" in unknown.json()

            for vm_id in ids:
                assert (await http.delete(f"/sandboxes/{vm_id}")).status_code == 204
            assert (await http.get("/health")).json() == {"machines": 0}
            assert set(server.kvm_fds().values()) == {0}, "closed sandboxes hold no KVM fds"
            after_delete = await http.post(f"/sandboxes/{first}/exec", json={"argv": ["true"]})
            assert after_delete.status_code == 404, "a deleted sandbox is forgotten"

            response = await http.post("/sandboxes", json={"timeout": EXPIRING_TIMEOUT})
            assert response.status_code == 201, response.text
            expiring = response.json()["id"]
            # The command outlives the sandbox: the request ends when the sandbox does.
            cut = await http.post(f"/sandboxes/{expiring}/exec", json={"argv": ["sleep", "600"]})
            assert cut.status_code == 410, cut.text
            later = await http.post(f"/sandboxes/{expiring}/exec", json={"argv": ["true"]})
            assert later.status_code == 410, later.text
            assert (await http.get("/health")).json() == {"machines": 0}

            response = await http.post("/sandboxes", json={})
            assert response.status_code == 201, response.text  # left for the shutdown to close

        assert await server.stop() == server_kind.clean_exit, server.text()

    log = server.text()
    assert "shutting down: closing 1 live sandboxes" in log, log
    assert "shut down: 0 sandboxes left open" in log, log
    assert [describe(process) for process in server.descendants if alive(process)] == [], log
    assert [p.pid for p in psutil.process_iter(["ppid"]) if p.info["ppid"] == server.process.pid] == []
