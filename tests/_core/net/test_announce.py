"""The VMM's announcement of the guest: a gratuitous ARP as RFC 5227 has a host announce its address."""

from __future__ import annotations

import pytest

from asupermachine._core.net.announce import gratuitous_arp

from .packets import ARPOP_REQUEST, GUEST_IP, GUEST_MAC, parse_arp


def test_the_announcement_is_a_broadcast_arp_request_for_the_guests_own_address() -> None:
    frame = gratuitous_arp(GUEST_MAC, GUEST_IP)
    assert frame[:6] == b"\xff" * 6 and frame[6:12] == GUEST_MAC and len(frame) == 42
    arp = parse_arp(frame)
    assert arp is not None
    assert (arp.operation, arp.sender_mac) == (ARPOP_REQUEST, GUEST_MAC)
    assert arp.sender_ip == arp.target_ip == GUEST_IP


@pytest.mark.parametrize(("mac", "address"), [(b"\x52\x54\x00", "10.0.2.15"), (b"\x52" * 6, "10.0.2")])
def test_a_bad_mac_or_address_is_refused(mac: bytes, address: str) -> None:
    with pytest.raises(ValueError):
        gratuitous_arp(mac, address)
