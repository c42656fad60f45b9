"""The IPv4 routes of the netns pyctr runs in, read from /proc/net/route (no process needed),
to refuse a subnet that would collide with one of them."""

import ipaddress
from collections import namedtuple


class HostRoute(namedtuple("HostRoute", "network device gateway")):
    """An IPv4Network, the device ("*" for blackhole and unreachable routes), and the gateway
    IPv4Address or None. (A named tuple: see driver.PortMapping.)"""
    __slots__ = ()

    def __str__(self) -> str:
        """As `ip route` would print it."""
        if self.device == "*":
            return f"blackhole {self.network}"
        via = f" via {self.gateway}" if self.gateway else ""
        return f"{self.network}{via} dev {self.device}"


def _address(hex_le: str) -> ipaddress.IPv4Address:
    # /proc/net/route prints addresses as host-endian (little-endian here) hex.
    return ipaddress.IPv4Address(int(hex_le, 16).to_bytes(4, "little"))


def routes(path: str = "/proc/net/route") -> list[HostRoute]:
    found = []
    with open(path) as f:
        for line in f:
            fields = line.split()
            if len(fields) < 8 or fields[0] == "Iface":  # the header (absent when there are no routes)
                continue
            device, dest, gateway, mask = fields[0], fields[1], fields[2], fields[7]
            network = ipaddress.IPv4Network(f"{_address(dest)}/{_address(mask)}", strict=False)
            gw = _address(gateway)
            found.append(HostRoute(network, device, gw if int(gw) else None))
    return found


def overlapping(subnet: ipaddress.IPv4Network, ignore_devices: tuple[str, ...] = (),
                pool: bool = False) -> HostRoute | None:
    """The first route (other than a default route) whose destination overlaps `subnet`. With
    `pool` (a cluster network's pool), a route inside it via a gateway is no overlap: it leads
    to another node's block (learned by BGP from the node's BIRD, or `network route add`)."""
    for route in routes():
        if route.network.prefixlen == 0 or route.device in ignore_devices:
            continue
        inside = route.network.prefixlen > subnet.prefixlen and route.network.subnet_of(subnet)
        if pool and route.gateway and inside:
            continue
        if route.network.overlaps(subnet):
            return route
    return None
