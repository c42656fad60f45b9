"""The veth pair both real drivers give a container, and the container's side of it.

The peer is created directly in the container's netns (`peer name eth0 netns PID`): about
1.5 ms, against about 15 ms to create it on the host and move it. The container's address and
routes are set by an `ip` started in its netns (see iproute.run), shown by the explain trace as
the `nsenter -t PID -n ip …` a person would type.
"""

import ipaddress

from pyctr.network import iproute

CONTAINER_INTERFACE = "eth0"


def host_interface(container_id: str) -> str:
    """The host end's name, derived from the ID so that teardown finds it without any state."""
    return "veth" + container_id[:8]


def mac_address(address: ipaddress.IPv4Address) -> str:
    """Docker's scheme: a locally administered 02:42 prefix, then the four bytes of the IP."""
    return "02:42:" + ":".join(f"{b:02x}" for b in address.packed)


def add_pair(host_name: str, pid: int, mac: str) -> list[str]:
    """The `ip` command that creates HOST <-> eth0 with eth0 in the netns of `pid`."""
    return ["link", "add", host_name, "type", "veth", "peer", "name", CONTAINER_INTERFACE,
            "address", mac, "netns", pid]


def configure_container_side(pid: int, address: ipaddress.IPv4Address, prefixlen: int,
                             routes: list[str]) -> None:
    """Address eth0, bring it up, add `routes` (as `ip route add` spells them, e.g.
    "default via 172.17.0.1"); `ip route add` marks them proto boot, as the walk-through's do."""
    iproute.run([["addr", "add", f"{address}/{prefixlen}", "dev", CONTAINER_INTERFACE],
                 ["link", "set", CONTAINER_INTERFACE, "up"],
                 *(["route", "add", *route.split()] for route in routes)], pid=pid)


def delete_host_end(host_name: str) -> None:
    """Delete the host end (its peer goes with it). Nothing to do once the netns is gone."""
    if iproute.link_exists(host_name):
        # The kernel may remove it meanwhile, with the container's netns.
        iproute.run([["link", "del", host_name]], missing_ok=True)
