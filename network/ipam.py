"""Address allocation, one file per network: $PYCTR_ROOT/networks/NAME/ipam.json.

    {"subnet": "172.17.0.0/16", "allocations": {"172.17.0.2": "<container id>"}}

A routed network with a datastore (net.datastore) takes its addresses from the cluster's pool
instead: pyctr.network.clusteripam, behind the same functions.

Every change happens under the network's flock, so containers started at the same time get
distinct addresses; the file is on disk, so allocations survive a restart. An address stays
with its container until the container is removed, so a restart keeps its address.
"""

import ipaddress
from pathlib import Path

from pyctr.network import networks
from pyctr.runtime import jsonstore
from pyctr.runtime.errors import ConflictError, PyctrError


def _paths(net: networks.Network) -> tuple[Path, Path]:
    return net.dir / "ipam.json", net.dir / "ipam.lock"


def _updating(net: networks.Network) -> jsonstore.updating:
    """``with _updating(net) as doc:`` changes doc["allocations"] under the network's lock."""
    path, lock = _paths(net)
    return jsonstore.updating(path, lock, {"subnet": net.subnet, "allocations": {}})


def reserved(net: networks.Network) -> set[ipaddress.IPv4Address]:
    """Never handed out: the network and broadcast addresses, and the gateway."""
    subnet = net.network
    never = {subnet.network_address, subnet.broadcast_address}
    if net.gateway:
        never.add(ipaddress.IPv4Address(net.gateway))
    return never


def _cluster():
    # Imported only for cluster networks: it brings the etcd client.
    from pyctr.network import clusteripam

    return clusteripam


def check_requested(net: networks.Network, address: ipaddress.IPv4Address) -> None:
    if net.datastore:
        raise PyctrError(f"--ip is not supported on network {net.name}: its addresses come from "
                         f"the cluster's pool in {net.datastore}")
    if address not in net.network:
        raise PyctrError(f"address {address} is outside network {net.name}'s subnet {net.subnet}")
    if address in reserved(net):
        what = "gateway" if str(address) == net.gateway else "network or broadcast address"
        raise ConflictError(f"address {address} is the {what} of network {net.name}")


def allocate(net: networks.Network, container_id: str, requested: ipaddress.IPv4Address | None = None,
             labels: dict | None = None) -> ipaddress.IPv4Address:
    """The container's address on `net`: the one it already holds, `requested`, or the lowest free.
    `labels`: the container's, published with a cluster network's claim (for its policies)."""
    if requested is not None:
        check_requested(net, requested)
    if net.datastore:
        return _cluster().allocate(net, container_id, labels)
    with _updating(net) as doc:
        allocations = doc["allocations"]
        held = [ip for ip, owner in allocations.items() if owner == container_id]
        if requested is None and held:
            return ipaddress.IPv4Address(held[0])
        for ip in held:
            del allocations[ip]
        if requested is not None:
            owner = allocations.get(str(requested))
            if owner is not None and owner != container_id:
                raise ConflictError(f"address {requested} is already in use on network {net.name}")
            allocations[str(requested)] = container_id
            return requested
        address = _lowest_free(net, allocations)
        if address is None:
            _forget_removed_containers(allocations)
            address = _lowest_free(net, allocations)
        if address is None:
            raise PyctrError(f"network {net.name} has no free address left in {net.subnet} "
                             f"({len(allocations)} in use)")
        allocations[str(address)] = container_id
        return address


def release(net: networks.Network, container_id: str) -> None:
    """Free every address the container holds on `net`. Idempotent."""
    if net.datastore:
        return _cluster().release(net, container_id)
    path, _ = _paths(net)
    if not path.exists():
        return
    with _updating(net) as doc:
        allocations = doc["allocations"]
        for ip in [ip for ip, owner in allocations.items() if owner == container_id]:
            del allocations[ip]


def allocations(net: networks.Network) -> dict[str, str]:
    if net.datastore:
        return _cluster().allocations(net)
    path, lock = _paths(net)
    with jsonstore.locked(lock, shared=True):
        doc = jsonstore.read_json(path, {}) or {}
    return dict(doc.get("allocations", {}))


def is_taken(net: networks.Network, address: ipaddress.IPv4Address, container_id: str) -> bool:
    owner = allocations(net).get(str(address))
    return owner is not None and owner != container_id


def _lowest_free(net: networks.Network, allocations: dict) -> ipaddress.IPv4Address | None:
    never = reserved(net)
    for address in net.network.hosts():
        if address not in never and str(address) not in allocations:
            return address
    return None


def _forget_removed_containers(allocations: dict) -> None:
    # A pyctr killed between allocating and recording its container leaves an owner that no
    # longer exists; reclaim those before declaring the network full.
    living = networks.container_ids()
    for ip in [ip for ip, owner in allocations.items() if owner not in living]:
        del allocations[ip]
