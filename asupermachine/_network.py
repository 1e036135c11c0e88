"""A machine's network, as the user asks for it (:class:`Network`) and as it is (:class:`MachineNetwork`).

Each networked machine gets one NIC and its own passt: egress is NAT to the
host's sockets, DNS goes to the host's resolver, and host ports can be published
into the guest (``docker run -p``). The host's own loopback stays closed unless
``allow_host_loopback``. ``allow_out``/``deny_out`` limit where the guest may
connect, as E2B's do (see :mod:`._core.net.egress`).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from ._core.net.egress import EgressFilter, EgressPolicy
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
    allow_out: Sequence[str] = ()
    """Destinations the guest may always connect to: IPv4 networks, addresses, host names
    (``pypi.org``, ``*.pythonhosted.org``; ``host.internal`` is the host). Wins over :attr:`deny_out`."""
    deny_out: Sequence[str] = ()
    """Destinations the guest may not connect to, unless :attr:`allow_out` names them; ``["0.0.0.0/0"]``
    denies all else. A refused TCP connection is reset, anything else gets ICMP unreachable. Published
    ports work whatever this says."""

    def __post_init__(self) -> None:
        if self.dns is not None:
            ipaddress.IPv4Address(self.dns)
        object.__setattr__(self, "publish", MappingProxyType(dict(self.publish)))
        policy = self.egress_policy()  # refuses bad entries now
        object.__setattr__(self, "allow_out", policy.allow_out)
        object.__setattr__(self, "deny_out", policy.deny_out)
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

    def egress_policy(self) -> EgressPolicy:
        return EgressPolicy.of(self.allow_out, self.deny_out)

    def egress(self, guest: GuestNetwork) -> EgressFilter:
        """The filter of the frames of a guest set up as ``guest``."""
        return EgressFilter(self.egress_policy(), gateway=guest.gateway, resolver=guest.dns or DNS_FORWARD)

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
    passt: str = ""
    """The passt serving it: its path and version (``/.../passt (0.0~git20250503.587980c-2+deb13u1)``)."""
    allow_out: tuple[str, ...] = ()
    """The egress policy when ``vm.network`` was read (see :attr:`Network.allow_out`)."""
    deny_out: tuple[str, ...] = ()
    refused: Mapping[str, int] = field(default_factory=dict, hash=False)
    """Frames the guest sent that the policy refused so far, by why: ``tcp``, ``udp``, ``icmp`` (flows to
    denied destinations), or a frame it does not read (``fragment``, ``ip options``, ``ethertype`` for
    IPv6, VLAN tags and other EtherTypes, ``protocol``, ``malformed``), each dropped."""
    failure: NetBackendError | None = None
    """Why the network stopped when ``vm.network`` was read (its passt died or broke its framing): the
    guest runs on without one. None while it serves."""

    @classmethod
    def of(cls, guest: GuestNetwork, passt: Passt) -> MachineNetwork:
        return cls(
            address=str(ipaddress.IPv4Interface(guest.address).ip), host_address=guest.gateway, mtu=guest.mtu,
            dns=guest.dns, publish=passt.publish, allow_host_loopback=passt.allow_host_loopback,
            passt=str(passt.program()),
        )

    def now(self, egress: EgressFilter | None, failure: NetBackendError | None) -> MachineNetwork:
        """This network as ``egress`` and ``failure`` say it is now."""
        if egress is None:
            return dataclasses.replace(self, failure=failure)
        policy = egress.policy
        return dataclasses.replace(
            self, allow_out=policy.allow_out, deny_out=policy.deny_out, refused=egress.refused, failure=failure
        )
