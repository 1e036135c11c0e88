"""``Network``: what it asks of the guest and of passt, checked before any VM exists."""

from __future__ import annotations

import pytest

from asupermachine import Network
from asupermachine._core.net.passt import MAX_MTU
from asupermachine._core.recipe import GuestNetwork
from asupermachine._network import DNS_FORWARD, MachineNetwork, chosen_network


def test_the_default_guest_uses_passts_forwarder_and_the_largest_mtu() -> None:
    guest = Network().guest()
    assert guest == GuestNetwork(address="10.0.2.15/24", gateway="10.0.2.2", mtu=MAX_MTU, dns=DNS_FORWARD)
    assert guest.init_option == f"10.0.2.15/24,10.0.2.2,{MAX_MTU},10.0.2.3"


def test_passt_is_told_the_guests_side_and_the_hosts_choices() -> None:
    network = Network(publish={8080: 80}, allow_host_loopback=True, dns="192.0.2.53", mtu=1500)
    passt = network.passt(network.guest())
    assert (passt.address, passt.gateway, passt.mtu) == ("10.0.2.15/24", "10.0.2.2", 1500)
    assert passt.dns_forward == DNS_FORWARD  # the guest names another resolver; the forwarder is harmless
    assert dict(passt.publish) == {8080: 80} and passt.allow_host_loopback
    argv = passt.argv(3)
    assert "--no-map-gw" not in argv and argv[argv.index("--tcp-ports") + 1] == "127.0.0.1/8080:80"
    assert "--no-map-gw" in Network().passt(Network().guest()).argv(3)
    info = MachineNetwork.of(network.guest(), passt)
    assert (info.address, info.host_address, info.dns, info.mtu) == ("10.0.2.15", "10.0.2.2", "192.0.2.53", 1500)


@pytest.mark.parametrize(
    "options",
    [{"publish": {70000: 80}}, {"publish": {"nowhere:80": 80}}, {"dns": "resolver"}, {"mtu": MAX_MTU + 1}],
)
def test_bad_networks_are_refused_when_made(options: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Network(**options)  # type: ignore[arg-type]


def test_a_restore_may_not_ask_for_another_guest_side() -> None:
    baked = Network().guest()
    Network(publish={9000: 80}, allow_host_loopback=True).check_restorable(baked)
    with pytest.raises(ValueError, match="resolver"):
        Network(dns="192.0.2.53").check_restorable(baked)
    with pytest.raises(ValueError, match="MTU"):
        Network(mtu=1500).check_restorable(baked)


@pytest.mark.parametrize(
    ("option", "expected"), [(True, Network()), (False, None), (Network(mtu=9000), Network(mtu=9000))]
)
def test_network_options_choose_a_network_or_none(option: bool | Network, expected: Network | None) -> None:
    assert chosen_network(option) == expected


def test_a_network_option_of_another_type_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="network="):
        chosen_network("yes")  # type: ignore[arg-type]
