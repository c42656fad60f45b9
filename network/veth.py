"""The veth pair both real drivers give a container, and the container's side of it.

The peer is created directly in the container's netns (`peer name eth0 netns PID`): about
1.5 ms, against about 15 ms to create it on the host and move it. The container's address and
routes go through a netlink socket opened inside its netns (see netlink.in_container); the
explain trace shows them as the `nsenter -t PID -n ip …` a person would type.
"""

import errno
import ipaddress
import subprocess

from pyctr.network import netlink
from pyctr.runtime import explain, hosttools
from pyctr.runtime.errors import PyctrError

CONTAINER_INTERFACE = "eth0"
# `ip route add` marks routes proto boot; pyroute2 would say static. Keep `ip route` output the
# same as the walk-through's.
PROTO_BOOT = 3
SCOPE_LINK = 253


def host_interface(container_id: str) -> str:
    """The host end's name, derived from the ID so that teardown finds it without any state."""
    return "veth" + container_id[:8]


def mac_address(address: ipaddress.IPv4Address) -> str:
    """Docker's scheme: a locally administered 02:42 prefix, then the four bytes of the IP."""
    return "02:42:" + ":".join(f"{b:02x}" for b in address.packed)


def create_pair(ipr, host_name: str, pid: int, mac: str) -> int:
    """Create HOST <-> eth0 with eth0 in the netns of `pid`. Returns the host end's index."""
    explain.step("ip", "link", "add", host_name, "type", "veth", "peer", "name",
                 CONTAINER_INTERFACE, "address", mac, "netns", pid)
    peer = {"ifname": CONTAINER_INTERFACE, "address": mac, "net_ns_pid": pid}
    try:
        ipr.link("add", ifname=host_name, kind="veth", peer=peer)
    except netlink.netlink_error() as e:
        if e.code != errno.EEXIST:
            raise
        # A leftover of this container's previous run whose netns is still being torn down.
        explain.step("ip", "link", "del", host_name)
        ipr.link("del", index=netlink.link_index(ipr, host_name))
        explain.step("ip", "link", "add", host_name, "type", "veth", "peer", "name",
                     CONTAINER_INTERFACE, "address", mac, "netns", pid)
        ipr.link("add", ifname=host_name, kind="veth", peer=peer)
    return netlink.link_index(ipr, host_name)


def configure_container_side(cipr, pid: int, address: ipaddress.IPv4Address, prefixlen: int,
                             routes: list[dict]) -> None:
    """Address eth0, bring it up, add `routes` (pyroute2 route() arguments plus "text", the
    route as `ip route add` spells it)."""
    index = netlink.link_index(cipr, CONTAINER_INTERFACE)
    in_ns = ("nsenter", "-t", pid, "-n")
    explain.step(*in_ns, "ip", "addr", "add", f"{address}/{prefixlen}", "dev", CONTAINER_INTERFACE)
    cipr.addr("add", index=index, address=str(address), prefixlen=prefixlen)
    explain.step(*in_ns, "ip", "link", "set", CONTAINER_INTERFACE, "up")
    cipr.link("set", index=index, state="up")
    for route in routes:
        route = dict(route)
        explain.step(*in_ns, "ip", "route", "add", *route.pop("text").split())
        cipr.route("add", oif=index, proto=PROTO_BOOT, **route)


def delete_host_end(host_name: str) -> None:
    """Delete the host end (its peer goes with it). Nothing to do once the netns is gone.

    Teardown runs in a fresh process (the container's monitor, or `rm`), where importing
    pyroute2 for this one call would cost about 60 ms; the `ip` tool does it in about 2 ms."""
    if not netlink.link_exists(host_name):
        return
    explain.step("ip", "link", "del", host_name)
    result = subprocess.run([hosttools.tool("ip"), "link", "del", host_name], capture_output=True, text=True)
    # The kernel may have removed it meanwhile, with the container's netns.
    if result.returncode != 0 and netlink.link_exists(host_name):
        raise PyctrError(f"ip link del {host_name}: {result.stderr.strip()}")
