"""The interface every network driver implements, and the registry that finds drivers by name.

Built-in drivers: none, host, bridge, routed. A third-party package adds one by declaring an
entry point in the group `pyctr.network_drivers`, e.g. in its pyproject.toml:

    [project.entry-points."pyctr.network_drivers"]
    vxlan = "mypkg.vxlan:VxlanDriver"
"""

import abc
import ipaddress
from collections import namedtuple

from pyctr.runtime.errors import NotFoundError

ENTRY_POINT_GROUP = "pyctr.network_drivers"

# Looked up without scanning installed packages (the built-ins are also declared as entry
# points, so a listing shows them; this table only saves the scan on the start-up path).
BUILTIN_DRIVERS = {
    "none": "pyctr.network.drivers:NoneDriver",
    "host": "pyctr.network.drivers:HostDriver",
    "bridge": "pyctr.network.bridge:BridgeDriver",
    "routed": "pyctr.network.routed:RoutedDriver",
}

# The records below are named tuples rather than dataclasses: `import dataclasses` costs about
# 8 ms (it imports inspect), and a start on a network needs these.


class PortMapping(namedtuple("PortMapping", "host_port container_port protocol host_ip",
                             defaults=("tcp", ""))):
    """-p HOSTPORT:CONTAINERPORT/PROTO: two ints, "tcp" or "udp", and the host address as a
    string, empty for every address of the node."""
    __slots__ = ()


class Endpoint(namedtuple("Endpoint", "interface host_interface mac address prefixlen gateway routes ports",
                          defaults=("", "", None, 0, "", (), ()))):
    """What a container got from attach(), enough for Docker's NetworkSettings: its interface
    (e.g. "eth0"; "" for none and host), the veth's host end, the MAC, the IPv4Address (or
    None), the prefix length, the gateway, the routes as `ip route` shows them inside the
    container, and the PortMappings."""
    __slots__ = ()


class NetworkDriver(abc.ABC):
    """One kind of network. `net` is a pyctr.network.networks.Network definition."""

    name: str = ""
    # Whether containers on its networks get an address from pyctr's IPAM.
    uses_ipam: bool = True
    # Whether -p works on its networks.
    publishes_ports: bool = False

    def check_definition(self, net) -> None:
        """Refuse a bad `network create` (PyctrError). Called before the definition is saved."""

    @abc.abstractmethod
    def create(self, net) -> None:
        """Make the network's kernel state (bridge, routes, rules). Idempotent."""

    def is_ready(self, net) -> bool:
        """A cheap test, made before each attach, that create()'s kernel state is there; when it
        is not (a reboot, a new node netns), the caller runs create() again under a lock."""
        return False

    @abc.abstractmethod
    def remove(self, net) -> None:
        """Undo create(). Idempotent."""

    @abc.abstractmethod
    def attach(self, net, container_id: str, pid: int, address: ipaddress.IPv4Address | None,
               ports: list[PortMapping]) -> Endpoint:
        """Connect the netns of process `pid` (the container's PID 1) to the network."""

    @abc.abstractmethod
    def detach(self, net, container_id: str, ports: list[PortMapping]) -> None:
        """Remove what attach() left on the host: veth, host routes, port rules (`ports` are
        those attach() was given). Idempotent; works after the container's processes are gone."""


def get_driver(name: str) -> NetworkDriver:
    """The driver registered under `name`, built in or from an installed package."""
    target = BUILTIN_DRIVERS.get(name)
    if target is None:
        target = _entry_points().get(name)
    if target is None:
        known = ", ".join(driver_names())
        raise NotFoundError(f"network driver {name!r} not found (known: {known})")
    module_name, _, class_name = target.partition(":")
    import importlib

    cls = getattr(importlib.import_module(module_name), class_name)
    driver = cls()
    driver.name = name
    return driver


def driver_names() -> list[str]:
    return sorted(set(BUILTIN_DRIVERS) | set(_entry_points()))


def _entry_points() -> dict[str, str]:
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
