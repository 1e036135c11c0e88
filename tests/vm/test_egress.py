"""Egress policy with real guests and the real passt: allowed and denied addresses and names, published ports
under a locked-down policy, a running VM's policy changed, and frames a hostile guest makes by hand.

Machines are restored from the baked built-in image. Whether a flow was refused
is read from ``vm.network.refused`` and from the guest's own error, never from
how long it took.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from asupermachine import Machine, Network, Snapshot
from asupermachine._core.net.passt_program import find_passt
from tests.support.exec_output import stdout_of
from tests.support.http_files import serving

from .test_network import GUEST_PORT, RESOLVED_NAME, free_port, serve_page

pytestmark = pytest.mark.anyio
DEADLINE = 600
DENY_ALL = ["0.0.0.0/0"]
UNROUTED = "192.0.2.1"  # TEST-NET-1 (RFC 5737): nothing answers there, so only a refusal is quick
RAWFRAMES = Path(__file__).with_name("rawframes.c")


@pytest.fixture(scope="module")
def host_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """An HTTP server on the host's 127.0.0.1 that serves ``hello.txt``."""
    root = tmp_path_factory.mktemp("served")
    (root / "hello.txt").write_text("hello from the host\n")
    with serving(root) as port:
        yield port


@pytest.fixture(scope="module")
def rawframes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A static program that sends hand-made frames on the guest's NIC."""
    program = tmp_path_factory.mktemp("rawframes") / "rawframes"
    subprocess.run(["musl-gcc", "-static", "-O2", "-o", str(program), str(RAWFRAMES)], check=True)
    return program.read_bytes()


async def fetch(vm: Machine, url: str) -> tuple[int | None, bytes, bytes]:
    """wget's exit status, output and errors, given 20 s (busybox wget's own ``-T`` crashes it here)."""
    result = await vm.exec(["timeout", "20", "wget", "-q", "-O-", url])
    return result.exit_code, result.stdout, result.stderr


def refused(vm: Machine, kind: str) -> int:
    assert vm.network is not None
    return vm.network.refused.get(kind, 0)


async def test_a_locked_down_guest_reaches_what_is_allowed_and_is_refused_the_rest_at_once(
    baked: Snapshot, host_port: int
) -> None:
    published = free_port()
    network = Network(
        publish={published: GUEST_PORT}, allow_host_loopback=True,
        allow_out=["host.internal", RESOLVED_NAME], deny_out=DENY_ALL,
    )
    with anyio.fail_after(DEADLINE):
        async with Machine.restore(baked, network=network) as vm:
            assert vm.network is not None
            assert (vm.network.allow_out, vm.network.deny_out) == (("host.internal", RESOLVED_NAME), tuple(DENY_ALL))
            assert vm.network.passt == str(find_passt()) and find_passt().fixed
            assert await fetch(vm, f"http://host.internal:{host_port}/hello.txt") == (0, b"hello from the host\n", b"")

            status, _, error = await fetch(vm, f"http://{UNROUTED}/")
            assert status != 0 and b"refused" in error.lower(), error
            assert refused(vm, "tcp") == 1

            # A name is allowed at the addresses the guest's resolver gives for it, once resolved.
            await vm.exec(["nslookup", RESOLVED_NAME])
            status, _, error = await fetch(vm, f"http://{RESOLVED_NAME}/")
            assert b"refused" not in error.lower() and refused(vm, "tcp") == 1, error

            # UDP elsewhere than the VM's resolver: ICMP unreachable.
            result = await vm.exec(["nslookup", RESOLVED_NAME, UNROUTED])
            assert result.exit_code != 0 and refused(vm, "udp") >= 1

            # Published ports are the host's way in: the policy is about the guest's way out.
            await serve_page(vm, "published")
            async with httpx.AsyncClient(timeout=60) as client:
                response = await client.get(f"http://127.0.0.1:{published}/index.html")
            assert (response.status_code, response.text) == (200, "published")


async def test_a_denied_name_is_refused_and_the_rest_reachable(baked: Snapshot, host_port: int) -> None:
    network = Network(allow_host_loopback=True, deny_out=[RESOLVED_NAME])
    with anyio.fail_after(DEADLINE):
        async with Machine.restore(baked, network=network) as vm:
            await vm.exec(["nslookup", RESOLVED_NAME])
            status, _, error = await fetch(vm, f"http://{RESOLVED_NAME}/")
            assert status != 0 and b"refused" in error.lower(), error
            assert refused(vm, "tcp") >= 1
            assert (await fetch(vm, f"http://host.internal:{host_port}/hello.txt"))[0] == 0


async def test_a_running_vms_policy_changes_from_its_next_connection(baked: Snapshot, host_port: int) -> None:
    url = f"http://host.internal:{host_port}/hello.txt"
    with anyio.fail_after(DEADLINE):
        async with Machine.restore(baked, network=Network(allow_host_loopback=True)) as vm:
            assert vm.network is not None and vm.network.deny_out == ()
            assert (await fetch(vm, url))[0] == 0
            vm.set_egress(deny_out=DENY_ALL)
            status, _, error = await fetch(vm, url)
            assert status != 0 and b"refused" in error.lower(), error
            vm.set_egress(allow_out=["10.0.2.0/24"], deny_out=DENY_ALL)
            assert (await fetch(vm, url))[0] == 0
            assert vm.network.allow_out == ("10.0.2.0/24",) and vm.network.refused == {"tcp": 1}
            with pytest.raises(ValueError, match="allow_out"):
                vm.set_egress(allow_out=["not a name"])


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the filter is the same under trio
async def test_frames_a_hostile_guest_makes_by_hand_are_refused_and_counted(
    baked: Snapshot, rawframes: bytes
) -> None:
    network = Network(allow_out=["10.0.2.2"], deny_out=DENY_ALL)
    kinds = ["ipv6", "vlan", "fragment", "options", "gre", "syn"]
    with anyio.fail_after(DEADLINE):
        async with Machine.restore(baked, network=network) as vm:
            await vm.write_file("/tmp/rawframes", rawframes, mode=0o755)
            sent = await vm.exec(["/tmp/rawframes", UNROUTED, *kinds])
            assert stdout_of(sent) == f"sent {len(kinds)}\n".encode()
            assert vm.network is not None
            counts = dict(vm.network.refused)
            # The guest's own stack may add IPv6 frames of its own (router solicitations).
            assert counts.pop("ethertype") >= 2
            assert counts == {"fragment": 1, "ip options": 1, "protocol": 1, "tcp": 1}
