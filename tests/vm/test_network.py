"""Networking with real guests and the real passt: egress, published ports, DNS, big transfers, and no leftovers.

Machines are restored from the baked built-in image (networked, as images are
by default); only the no-NIC check and the panic boot cold. All traffic stays
on this machine, except DNS, which goes to the host's own resolver as passt
forwards it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import psutil
import pytest

from asupermachine import GuestExit, Machine, NetBackendError, Network, Runtime, ShutdownReason, Snapshot
from tests.support.exec_output import stdout_of
from tests.support.http_files import serving
from tests.support.resources import assert_nothing_left, held

pytestmark = pytest.mark.anyio
DEADLINE = 600
GUEST_PORT = 8080
# A guard against a hang, not a timing: a CI run on a loaded host took 2.4x as long as usual.
TRANSFER_DEADLINE = 1500
BLOB_BYTES = 16 << 20  # 64 MiB takes minutes here: the emulated guest kernel copies ~2 MiB/s
RESOLVED_NAME = "deb.debian.org"  # the set-up script fetches Debian packages, so the host resolves it
KILLED_SCRIPT = Path(__file__).with_name("killed_with_a_network.py")


@pytest.fixture(scope="module")
def host_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """An HTTP server on the host's 127.0.0.1 serving a directory: its port and the directory."""
    root = tmp_path_factory.mktemp("served")
    (root / "hello.txt").write_text("hello from the host\n")
    with serving(root) as port:
        yield port, root


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1: held together while chosen, so none comes twice."""
    with contextlib.ExitStack() as held_open:
        probes = [held_open.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]


def passts() -> set[int]:
    """The pids of this process's passt children: setpriv until it execs passt (a restore does not wait for
    that), then passt or ``passt.avx2``."""
    found = set()
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error):  # gone, or a zombie, meanwhile
            if any(Path(word).name.startswith("passt") for word in child.cmdline()):
                found.add(child.pid)
    return found


async def serve_page(vm: Machine, body: str) -> None:
    """busybox httpd on the guest's GUEST_PORT serving ``body`` as /index.html (it forks into the background)."""
    script = f"mkdir -p /www && printf %s {body} > /www/index.html && httpd -p {GUEST_PORT} -h /www"
    stdout_of(await vm.exec(["sh", "-c", script]))


async def test_two_clones_reach_the_host_and_answer_on_their_own_published_ports(
    baked: Snapshot, host_server: tuple[int, Path]
) -> None:
    port, _ = host_server
    before, host_ports = held(), free_ports(2)
    with anyio.fail_after(DEADLINE):
        async with Runtime() as rt:
            vms = [
                await rt.restore(baked, network=Network(publish={host_port: GUEST_PORT}, allow_host_loopback=True))
                for host_port in host_ports
            ]
            assert len(passts()) == 2
            # Published ports first, before the guests send anything of their own: passt must
            # already know where they are (the VMM announces each guest when its link starts).
            for vm in vms:
                await serve_page(vm, vm.id)
            async with httpx.AsyncClient(timeout=60) as client:
                for vm, host_port in zip(vms, host_ports, strict=True):
                    response = await client.get(f"http://127.0.0.1:{host_port}/index.html")
                    assert (response.status_code, response.text) == (200, vm.id)
            for vm in vms:
                assert vm.network is not None and vm.network.host_address == "10.0.2.2"
                fetched = await vm.exec(["wget", "-q", "-O-", f"http://host.internal:{port}/hello.txt"])
                assert stdout_of(fetched) == b"hello from the host\n"
    assert passts() == set()
    assert_nothing_left(before)


async def test_without_allow_host_loopback_the_hosts_loopback_is_out_of_reach(
    baked: Snapshot, host_server: tuple[int, Path]
) -> None:
    port, _ = host_server
    with anyio.fail_after(DEADLINE):
        async with Machine.restore(baked) as vm:
            assert vm.network is not None and not vm.network.allow_host_loopback
            for address in ("host.internal", vm.network.host_address):
                # busybox wget's own -T crashes it (SIGSEGV), which would pass for a failure here.
                result = await vm.exec(["timeout", "5", "wget", "-q", "-O-", f"http://{address}:{port}/hello.txt"])
                assert result.exit_code not in (0, None) and result.stdout == b""
            # The guest's own loopback is its own.
            await serve_page(vm, "guest-loopback")
            own = await vm.exec(["wget", "-q", "-O-", f"http://127.0.0.1:{GUEST_PORT}/"])
            assert stdout_of(own) == b"guest-loopback"


async def test_the_guest_resolves_names_through_passt_as_the_host_does(baked: Snapshot) -> None:
    expected = {info[4][0] for info in socket.getaddrinfo(RESOLVED_NAME, 80, socket.AF_INET)}
    with anyio.fail_after(DEADLINE):
        async with Machine.restore(baked) as vm:
            assert vm.network is not None
            resolv = stdout_of(await vm.exec(["cat", "/etc/resolv.conf"])).decode()
            assert resolv.split() == ["nameserver", vm.network.dns]
            hosts = stdout_of(await vm.exec(["cat", "/etc/hosts"])).decode()
            assert f"{vm.network.address}\t{vm.id}" in hosts  # a clone's own name, not the baked VM's
            assert f"{vm.network.host_address}\thost.internal" in hosts
            answer = stdout_of(await vm.exec(["nslookup", RESOLVED_NAME])).decode()
    resolved = {line.split()[-1] for line in answer.splitlines()[2:] if line.startswith("Address")}
    assert resolved & expected, answer


# The guest's network stack is the same under trio, and these cost minutes of emulated guest
# kernel (a 16 MiB transfer each way; two cold boots): they run under asyncio only.
ASYNCIO_ONLY = pytest.mark.parametrize("anyio_backend", ["asyncio"])


@ASYNCIO_ONLY
@pytest.mark.guest_heavy  # 32 MiB through an emulated guest kernel's TCP: minutes under kvm_pvm
async def test_16_mib_each_way_arrive_intact(baked: Snapshot, host_server: tuple[int, Path]) -> None:
    port, served = host_server
    blob = os.urandom(BLOB_BYTES)
    (served / "blob").write_bytes(blob)
    host_port = free_port()
    network = Network(publish={host_port: GUEST_PORT}, allow_host_loopback=True)
    with anyio.fail_after(TRANSFER_DEADLINE):
        async with Machine.restore(baked, network=network) as vm:
            # Host to guest: the guest downloads through egress.
            fetch = f"wget -q -O /tmp/blob http://host.internal:{port}/blob && sha256sum /tmp/blob"
            assert stdout_of(await vm.exec(["sh", "-c", fetch])).split()[0].decode() == hashlib.sha256(blob).hexdigest()
            # Guest to host: the host downloads it back through the published port. The guest moves
            # the file rather than making one from /dev/urandom, whose generator runs in the guest
            # kernel: emulated here, it took minutes for 16 MiB.
            serve = "mkdir -p /www && mv /tmp/blob /www/out && httpd -p %d -h /www"
            await vm.exec(["sh", "-c", serve % GUEST_PORT])
            async with httpx.AsyncClient(timeout=300) as client:
                response = await client.get(f"http://127.0.0.1:{host_port}/out")
    assert len(response.content) == BLOB_BYTES and response.content == blob


async def test_a_snapshot_with_a_nic_refuses_network_false_and_one_without_refuses_a_network(
    baked: Snapshot,
) -> None:
    with pytest.raises(ValueError, match="has a NIC"):
        async with Machine.restore(baked, network=False):
            pytest.fail("restored")
    with pytest.raises(ValueError, match="MTU"):
        async with Machine.restore(baked, network=Network(mtu=1500)):
            pytest.fail("restored")


@ASYNCIO_ONLY
async def test_network_false_boots_without_a_nic_and_a_panicking_guest_leaves_no_passt() -> None:
    before = held()
    with anyio.fail_after(DEADLINE):
        async with Runtime() as rt:
            bare = await rt.boot(network=False)
            panicking = await rt.boot(cmdline_extra="rdinit=/bin/false", network=True)
            assert len(passts()) == 1
            assert await panicking.wait() == GuestExit(ShutdownReason.PANIC)
            while not panicking.closed:
                await anyio.sleep(0.05)
            assert passts() == set()  # freed with the guest, the runtime still running
            interfaces = stdout_of(await bare.exec(["ls", "/sys/class/net"])).split()
            assert b"eth0" not in interfaces and b"lo" in interfaces and bare.network is None
    assert_nothing_left(before)


async def test_a_cancelled_machine_leaves_no_passt(baked: Snapshot) -> None:
    with anyio.CancelScope() as scope:
        async with Machine.restore(baked):
            assert len(passts()) == 1
            scope.cancel()
            await anyio.sleep_forever()
    assert scope.cancelled_caught and passts() == set()


async def test_a_passt_that_dies_is_reported_on_vm_network_and_the_guest_runs_on(baked: Snapshot) -> None:
    with anyio.fail_after(DEADLINE):
        async with Machine.restore(baked) as vm:
            assert vm.network is not None and vm.network.failure is None
            (passt,) = passts()
            os.kill(passt, signal.SIGKILL)
            while vm.network.failure is None:
                await anyio.sleep(0.05)
            assert isinstance(vm.network.failure, NetBackendError)
            assert "killed by SIGKILL" in str(vm.network.failure)
            assert stdout_of(await vm.exec(["echo", "still here"])) == b"still here\n"
    assert passts() == set()


def test_passt_dies_with_a_python_process_killed_by_sigkill(baked: Snapshot) -> None:
    with subprocess.Popen(
        [sys.executable, str(KILLED_SCRIPT), str(baked.path)], stdout=subprocess.PIPE, text=True
    ) as victim:
        assert victim.stdout is not None
        started = json.loads(victim.stdout.readline())
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    passt = psutil.Process(started["passt_pid"]) if psutil.pid_exists(started["passt_pid"]) else None
    if passt is not None:
        # Reparented to this machine's init; gone, or a zombie waiting to be reaped.
        try:
            passt.wait(timeout=10)
        except psutil.TimeoutExpired:
            pytest.fail(f"passt {started['passt_pid']} outlived the process that ran its VM: {passt.status()}")
        except psutil.NoSuchProcess:
            pass
