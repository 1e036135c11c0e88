"""Whatever a guest puts on its NIC, and whatever comes back from its resolver, the egress filter judges it
without raising: a frame is let through, refused with a well-formed answer, or dropped and counted."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from asupermachine._core.net.egress import EgressFilter, EgressPolicy
from asupermachine._core.net.packets import internet_checksum

from .test_egress import GATEWAY, RESOLVER, answer_from, ethernet, ipv4

PROTOCOLS = st.sampled_from([1, 6, 17, 47, 0, 255])
ADDRESSES = st.sampled_from(["10.0.2.2", "10.0.2.3", "192.0.2.1", "255.255.255.255", "0.0.0.0"])


@st.composite
def guest_frames(draw: st.DrawFn) -> bytes:
    """Frames near the shapes the filter reads, cut and bent where its bounds checks are."""
    payload = draw(st.binary(max_size=64))
    if draw(st.booleans()):
        return draw(st.binary(max_size=80))
    packet = ipv4("10.0.2.15", draw(ADDRESSES), draw(PROTOCOLS), payload,
                  fragment=draw(st.sampled_from([0, 0x4000, 0x2000, 1])))
    if draw(st.booleans()):  # a length, version or header length that lies
        at = draw(st.sampled_from([0, 2, 3]))
        packet = packet[:at] + bytes([draw(st.integers(0, 255))]) + packet[at + 1 :]
    frame = ethernet(packet, draw(st.sampled_from([0x0800, 0x0800, 0x0806, 0x86DD, 0x8100])))
    return frame[: draw(st.integers(0, len(frame)))]


@settings(max_examples=2000, deadline=None)
@given(frame=guest_frames())
def test_any_guest_frame_is_judged_and_a_refusal_is_well_formed(frame: bytes) -> None:
    egress = EgressFilter(EgressPolicy(("host.internal",), ("0.0.0.0/0",)), gateway=GATEWAY, resolver=RESOLVER)
    answer = egress.outbound(frame)
    if answer:
        (total,) = struct.unpack_from("!H", answer, 16)
        assert len(answer) == 14 + total and internet_checksum(answer[14:34]) == 0
        assert answer[:6] == frame[6:12], "to the guest that sent it"
    assert sum(egress.refused.values()) == (answer is not None)


@settings(max_examples=1000, deadline=None)
@given(message=st.binary(max_size=300), cut=st.integers(0, 400))
def test_any_answer_from_the_resolver_is_read_without_raising(message: bytes, cut: int) -> None:
    egress = EgressFilter(EgressPolicy(("pypi.org",), ("0.0.0.0/0",)), gateway=GATEWAY, resolver=RESOLVER)
    egress.inbound(answer_from(RESOLVER, message)[:cut])
