"""A machine's network, as the user asks for it (:class:`Network`) and as it is (:class:`MachineNetwork`).

Each networked machine gets one NIC and its own passt: egress is NAT to the
host's sockets, DNS goes to the host's resolver, and host ports can be published
into the guest (``docker run -p``). The host's own loopback stays closed unless
``allow_host_loopback``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ._core.net.passt import MAX_MTU, Passt
from ._core.recipe import GuestNetwork
from ._errors import NetBackendError

DNS_FORWARD = "10.0.2.3"
"""The resolver a guest is given unless told: passt answers there with the host's resolver."""
_PASST = Passt()


@dataclass(frozen=True)
class Network:
    """How a machine is networked (``network=`` of start, boot, restore, bake and pools)."""

    publish: Mapping[str | int, int] = field(default_factory=dict, hash=False)
    """Host ``[ADDR:]PORT`` -> guest TCP port, like ``docker run -p``: ``{8080: 80}`` listens on the
    host's 127.0.0.1:8080, ``{"0.0.0.0:8080": 80}`` on every address."""
    allow_host_loopback: bool = False
    """Let the guest reach the host's 127.0.0.1 at :attr:`MachineNetwork.host_address` (``host.internal``)."""
    dns: str | None = None
    """The resolver the guest uses; None: the host's, through passt. Set at boot (a snapshot keeps it)."""
    mtu: int = MAX_MTU
    """Bytes of the guest's MTU. Set at boot (a snapshot keeps it)."""

    def __post_init__(self) -> None:
        if self.dns is not None:
            ipaddress.IPv4Address(self.dns)
        object.__setattr__(self, "publish", MappingProxyType(dict(self.publish)))
        self.passt(self.guest())  # refuse bad ports or an MTU passt cannot carry now, not at start

    def guest(self) -> GuestNetwork:
        """The guest's side, which init sets up at boot."""
        return GuestNetwork(
            address=_PASST.address, gateway=_PASST.gateway, mtu=self.mtu, dns=self.dns or DNS_FORWARD
        )

    def passt(self, guest: GuestNetwork) -> Passt:
        """The host's side for a guest set up as ``guest``: how its passt serves it."""
        return Passt(
            address=guest.address, gateway=guest.gateway, mtu=guest.mtu, dns_forward=DNS_FORWARD,
            publish=self.publish, allow_host_loopback=self.allow_host_loopback,
        )

    def check_restorable(self, guest: GuestNetwork) -> None:
        """Raise ``ValueError`` if this asks for a guest side other than ``guest``, a snapshot's."""
        if self.dns is not None and self.dns != guest.dns:
            raise ValueError(f"the snapshot's guest uses the resolver {guest.dns}: dns={self.dns!r} is set at boot")
        if self.mtu != MAX_MTU and self.mtu != guest.mtu:
            raise ValueError(f"the snapshot's guest has an MTU of {guest.mtu}: mtu={self.mtu} is set at boot")


NetworkOption = bool | Network
"""``network=``: True (egress, nothing published), False (no NIC at all), or a :class:`Network`."""


def chosen_network(option: NetworkOption) -> Network | None:
    """The :class:`Network` an option asks for; None for no NIC."""
    if isinstance(option, Network):
        return option
    if option is True:
        return Network()
    if option is False:
        return None
    raise TypeError(f"network= takes True, False or a Network, not {option!r}")


@dataclass(frozen=True)
class MachineNetwork:
    """A running machine's network (``vm.network``)."""

    address: str
    """The guest's IPv4 address."""
    host_address: str
    """Where the guest reaches the host (``host.internal``): its loopback with ``allow_host_loopback``."""
    mtu: int
    dns: str
    """The resolver the guest uses."""
    publish: Mapping[str | int, int]
    """Host ``[ADDR:]PORT`` -> guest port, as given."""
    allow_host_loopback: bool
    failure: NetBackendError | None = None
    """Why the network stopped when ``vm.network`` was read (its passt died or broke its framing): the
    guest runs on without one. None while it serves."""

    @classmethod
    def of(cls, guest: GuestNetwork, passt: Passt) -> MachineNetwork:
        return cls(
            address=str(ipaddress.IPv4Interface(guest.address).ip), host_address=guest.gateway, mtu=guest.mtu,
            dns=guest.dns, publish=passt.publish, allow_host_loopback=passt.allow_host_loopback,
        )
