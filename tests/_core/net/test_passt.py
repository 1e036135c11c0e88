"""A real passt, no VM: the test plays the guest with hand-built frames over the link."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import anyio
import pytest

from asupermachine import NetBackendError
from asupermachine._core.net.announce import gratuitous_arp
from asupermachine._core.net.passt import MAX_MTU, MIN_MTU, Passt, PasstLink, running_passt
from asupermachine._core.net.stream_framing import MAX_SENT_FRAME_LENGTH

from .packets import (
    ARPOP_REPLY,
    DHCP_DNS,
    DHCP_MESSAGE_TYPE,
    DHCP_MTU,
    DHCP_OFFER,
    DHCP_ROUTER,
    DHCP_SUBNET_MASK,
    GATEWAY_IP,
    GUEST_IP,
    GUEST_MAC,
    IPPROTO_TCP,
    TCP_ACK,
    TCP_SYN,
    arp_request,
    dhcp_discover,
    ip,
    parse_arp,
    parse_dhcp,
    parse_ipv4,
    parse_tcp,
)

pytestmark = pytest.mark.anyio

T = TypeVar("T")
ANSWER_DEADLINE = 10.0  # seconds; passt answers in microseconds, the deadline only stops a hang
ORPHAN_SCRIPT = Path(__file__).with_name("orphaned_passt.py")


async def first_answer(link: PasstLink, parse: Callable[[bytes], T | None]) -> T:
    """The first frame from passt that ``parse`` makes something of."""
    with anyio.fail_after(ANSWER_DEADLINE):
        while True:
            for frame in await link.receive_frames():
                parsed = parse(bytes(frame))
                if parsed is not None:
                    return parsed


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def process_state(pid: int) -> str | None:
    """The state letter of ``pid`` (``Z`` for a zombie), or None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return None


async def test_passt_answers_arp_for_the_gateway() -> None:
    async with running_passt(Passt()) as link:
        await link.send_frames([arp_request(GUEST_MAC, GUEST_IP, GATEWAY_IP)])
        reply = await first_answer(link, parse_arp)
    assert reply.operation == ARPOP_REPLY
    assert reply.sender_ip == GATEWAY_IP
    assert (reply.target_mac, reply.target_ip) == (GUEST_MAC, GUEST_IP)


def dhcp_answer(frame: bytes) -> tuple[str, dict[int, bytes]] | None:
    packet = parse_ipv4(frame)
    return None if packet is None else parse_dhcp(packet)


@pytest.mark.parametrize(
    ("options", "address", "mask", "router", "mtu"),
    [
        (Passt(), GUEST_IP, "255.255.255.0", GATEWAY_IP, MAX_MTU),
        (Passt(address="10.1.0.20/16", gateway="10.1.0.1", mtu=1500), "10.1.0.20", "255.255.0.0", "10.1.0.1", 1500),
    ],
)
async def test_dhcp_offers_the_guest_its_address_gateway_and_mtu(
    options: Passt, address: str, mask: str, router: str, mtu: int
) -> None:
    async with running_passt(options) as link:
        await link.send_frames([dhcp_discover(GUEST_MAC, transaction=0x5AFE)])
        offered, answer = await first_answer(link, dhcp_answer)
    assert answer[DHCP_MESSAGE_TYPE] == bytes([DHCP_OFFER])
    assert offered == address
    assert answer[DHCP_SUBNET_MASK] == ip(mask)
    assert answer[DHCP_ROUTER] == ip(router)
    assert int.from_bytes(answer[DHCP_MTU], "big") == mtu
    # This passt offers the host's resolvers, not the --dns-forward address.
    assert DHCP_DNS in answer


@pytest.mark.parametrize("told", ["an ARP request", "the VMM's announcement", "nothing"])
async def test_a_connection_to_a_published_port_reaches_the_guest_as_a_syn(told: str) -> None:
    host_port = free_port()
    async with running_passt(Passt(publish={host_port: 8080})) as link:
        # passt learns the guest's MAC from what it sends; until then it sends to 00:00:00:00:00:00.
        if told == "an ARP request":
            await link.send_frames([arp_request(GUEST_MAC, GUEST_IP, GATEWAY_IP)])
            await first_answer(link, parse_arp)
        elif told == "the VMM's announcement":
            await link.send_frames([gratuitous_arp(GUEST_MAC, GUEST_IP)])
        async with await anyio.connect_tcp("127.0.0.1", host_port):

            def syn(frame: bytes) -> tuple[bytes, str, int, int] | None:
                packet = parse_ipv4(frame)
                if packet is None or packet.protocol != IPPROTO_TCP:
                    return None
                segment = parse_tcp(packet)
                if segment.flags & (TCP_SYN | TCP_ACK) != TCP_SYN:
                    return None
                return frame[:6], packet.destination, segment.destination_port, segment.source_port

            destination_mac, destination, port, source_port = await first_answer(link, syn)
    assert (destination_mac, destination, port) == (bytes(6) if told == "nothing" else GUEST_MAC, GUEST_IP, 8080)
    assert source_port > 0


@pytest.mark.parametrize(
    ("host", "reached_at"), [("127.0.0.1", "127.0.0.1"), ("0.0.0.0", "127.0.0.1"), ("[::1]", "::1")]
)
async def test_a_published_port_listens_on_the_host_address_given(host: str, reached_at: str) -> None:
    port = free_port()
    async with running_passt(Passt(publish={f"{host}:{port}": 80})):
        stream = await anyio.connect_tcp(reached_at, port)
        await stream.aclose()


def test_a_bare_port_is_published_on_the_host_loopback_only() -> None:
    argv = Passt(publish={8080: 80, "9090": 90, "0.0.0.0:7070": 70}).argv(3)
    specs = [argv[index + 1] for index, word in enumerate(argv) if word == "--tcp-ports"]
    assert specs == ["127.0.0.1/8080:80", "127.0.0.1/9090:90", "0.0.0.0/7070:70"]


def test_the_gateway_reaches_the_host_loopback_only_when_allowed() -> None:
    assert "--no-map-gw" in Passt().argv(3)
    assert "--no-map-gw" not in Passt(allow_host_loopback=True).argv(3)


@pytest.mark.parametrize("host", ["localhost:80", "80000", ":", "127.0.0.1:0"])
def test_a_malformed_publication_is_refused_at_once(host: str) -> None:
    with pytest.raises(ValueError, match="cannot publish"):
        Passt(publish={host: 80})


async def test_frames_sent_in_one_batch_all_reach_passt() -> None:
    async with running_passt(Passt()) as link:
        for _ in range(4):
            # Far more than the socket buffer holds, so sends wait for passt to read: a frame torn across
            # its reads would put this passt out of step with the stream, and the ARP would go unanswered.
            padding = [bytes(MAX_SENT_FRAME_LENGTH)] * 256
            await link.send_frames([*padding, arp_request(GUEST_MAC, GUEST_IP, GATEWAY_IP)])
            reply = await first_answer(link, parse_arp)
            assert reply.sender_ip == GATEWAY_IP


@pytest.mark.parametrize("mtu", [MIN_MTU - 1, MAX_MTU + 1])
def test_an_mtu_whose_frames_would_not_reach_passt_whole_is_refused(mtu: int) -> None:
    with pytest.raises(ValueError, match=f"MTU of {mtu} bytes"):
        Passt(mtu=mtu)
    assert MAX_MTU + 14 + 4 <= MAX_SENT_FRAME_LENGTH


@pytest.mark.parametrize("how", ["normally", "by an error", "by cancellation"])
async def test_leaving_the_block_kills_and_reaps_passt_and_closes_every_fd(how: str) -> None:
    async with running_passt(Passt()):
        pass  # the event loop opens some fds lazily, once
    before = open_fds()
    with anyio.CancelScope() as scope:
        try:
            async with running_passt(Passt()) as link:
                assert process_state(link.pid) not in (None, "Z")
                if how == "by an error":
                    raise LookupError("the block failed")
                if how == "by cancellation":
                    scope.cancel()
                    await anyio.sleep_forever()
        except LookupError:
            assert how == "by an error"
    assert scope.cancelled_caught == (how == "by cancellation")
    assert process_state(link.pid) is None  # reaped: no zombie left
    assert link.returncode in (0, -signal.SIGKILL)  # it may see the link close before the SIGKILL
    assert open_fds() == before


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (Passt(publish={"192.0.2.1:8080": 80}), "Failed to bind"),  # not an address of this host
        (Passt(executable="/nonexistent/passt"), "/nonexistent/passt"),
    ],
)
async def test_bad_options_raise_net_backend_error_with_passts_message(options: Passt, message: str) -> None:
    before = open_fds()
    with pytest.raises(NetBackendError, match="passt would not start") as raised:
        async with running_passt(options):
            pytest.fail("passt started")
    assert message in str(raised.value)
    assert "syslog" not in str(raised.value)
    assert open_fds() == before


async def test_a_host_port_already_taken_raises_net_backend_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # Debian 12's passt says "any port for", newer ones "port N (Address already in use) for option".
        with pytest.raises(NetBackendError, match=rf"Failed to bind .*'-t 127\.0\.0\.1/{port}:80'"):
            async with running_passt(Passt(publish={port: 80})):
                pytest.fail("passt started")


async def test_the_link_raises_net_backend_error_once_passt_has_gone() -> None:
    async with running_passt(Passt()) as link:
        os.kill(link.pid, signal.SIGKILL)
        with pytest.raises(NetBackendError, match="passt closed the link: it was killed by SIGKILL"):
            await link.receive_frames()
        with pytest.raises(NetBackendError, match="passt closed the link"):
            await link.send_frames([arp_request(GUEST_MAC, GUEST_IP, GATEWAY_IP)] * 1000)


async def test_a_task_still_receiving_when_the_block_is_left_gets_closed_resource_error() -> None:
    outcome: list[BaseException] = []

    async def receive(link: PasstLink) -> None:
        try:
            await link.receive_frames()
        except anyio.ClosedResourceError as error:
            outcome.append(error)

    async with anyio.create_task_group() as tasks:
        async with running_passt(Passt()) as link:
            tasks.start_soon(receive, link)
            await anyio.wait_all_tasks_blocked()
    assert len(outcome) == 1
    with pytest.raises(anyio.ClosedResourceError):
        await link.send_frames([arp_request(GUEST_MAC, GUEST_IP, GATEWAY_IP)])


async def test_passt_dies_with_its_parent_even_on_sigkill(anyio_backend: str) -> None:
    # The child process also gives a copy of the link's socket to a process that outlives it,
    # so that passt sees no end-of-file: only the parent-death signal can end it.
    result = await anyio.run_process([sys.executable, str(ORPHAN_SCRIPT), anyio_backend], check=False)
    assert result.returncode == 0, result.stderr.decode()
    report = json.loads(result.stdout)
    assert report["passt_status"] == f"killed by signal {signal.SIGKILL}"
    assert process_state(report["passt_pid"]) is None
