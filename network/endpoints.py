"""The endpoints of a network: each attached container's address, labels, and the interface its
packets cross on this node. Network policies are compiled from this list alone: a selector's
set holds the addresses of the endpoints whose labels it matches (policyrules.py).

On one host the list is read from what pyctr keeps anyway: the network's address allocations
(ipam), each container's labels (its config.json, written at create and never changed), and
whether its veth exists now (the container is attached: between connect and disconnect). Nothing
more is written at a start, so a network without policies pays nothing.

On a cluster network (one with a datastore), every node publishes its own endpoints (address,
labels, container) in etcd when it claims their addresses (clusteripam.py), and endpoints() adds
those of the other nodes with `interface` "": their addresses go into the sets, so a selector
matches containers on every node, but only local endpoints get chains (clusterpolicy.py).
"""

import ipaddress
import socket
from collections import namedtuple

from pyctr.network import ipam, networks, veth
from pyctr.runtime import jsonstore, settings


class Endpoint(namedtuple("Endpoint", "container_id name address labels interface")):
    """A container on the network: its id, name, IPv4 address (a string), labels (a dict), and
    the interface its packets cross on this node: the host end of its veth on a routed network,
    the bridge on a bridge network (switched packets reach nftables through br_netfilter as the
    bridge's), or "" for a container on another node. (A named tuple: see driver.PortMapping.)"""
    __slots__ = ()


def endpoints(net: networks.Network, joining: str = "", leaving: str = "", read=None) -> list[Endpoint]:
    """The network's endpoints, by address. `joining`: a container being connected (its veth
    exists, its record does not say so yet); `leaving`: one being disconnected (its veth may
    outlive it for a moment). `read`: the other nodes' as the node agent read them
    (clusterpolicy.Read), else read now."""
    found = []
    for address, container_id in ipam.allocations(net).items():
        if container_id == leaving or not (container_id == joining or _attached(container_id)):
            continue
        record = jsonstore.read_json(settings.current().containers_dir / container_id / "config.json")
        if record is None:  # an allocation of another node (a cluster pool), or a record being removed
            continue
        labels = (record.get("Config") or {}).get("Labels") or {}
        interface = net.bridge if net.driver == "bridge" else veth.host_interface(container_id)
        found.append(Endpoint(container_id, (record.get("Name") or "").lstrip("/"), address,
                              dict(labels), interface))
    if net.datastore:
        from pyctr.network import clusterpolicy  # only cluster networks need the etcd client

        found += [Endpoint(container_id, "", address, labels, "")
                  for address, container_id, labels in clusterpolicy.other_nodes_endpoints(net, read)]
    return sorted(found, key=lambda e: ipaddress.IPv4Address(e.address))


def _attached(container_id: str) -> bool:
    """Whether the container's veth exists in pyctr's netns (an ioctl, no process)."""
    try:
        socket.if_nametoindex(veth.host_interface(container_id))
        return True
    except OSError:
        return False
