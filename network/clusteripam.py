"""Address allocation for a routed network whose pool lives in the cluster's datastore (etcd).

The pool is cut into blocks of /block_size. A node claims a block (the first free one) when it
holds none with a free address; the block is then affine to it, and only it hands out addresses
from it. Each address is claimed in etcd with one transaction, so a container start that finds
room in the node's blocks costs one etcd request.

The node keeps its own view in $PYCTR_ROOT/networks/NAME/ipam.json, under the network's flock:

    {"subnet": POOL, "blocks": ["172.19.0.0/24"], "allocations": {"172.19.0.1": "<container id>"}}

etcd is the truth; the file spares a read per start. Every claim still goes through etcd's
create-if-absent, so a stale file can make a claim fail and retry, never give an address twice.

The claim's transaction also publishes the endpoint, /pyctr/endpoints/NET/IP {"container",
"node", "labels"}, for the network policies of the other nodes (clusterpolicy.py); the release
deletes both keys in one transaction too. An endpoint is published from its first start until
its removal (a stopped container keeps its address, so its address stays in the sets: no other
container can use it meanwhile).
"""

import ipaddress
from pathlib import Path

from pyctr.network import datastore, networks
from pyctr.runtime import jsonstore
from pyctr.runtime.errors import ConflictError, PyctrError


def _paths(net: networks.Network) -> tuple[Path, Path]:
    return net.dir / "ipam.json", net.dir / "ipam.lock"


def _updating(net: networks.Network) -> jsonstore.updating:
    path, lock = _paths(net)
    return jsonstore.updating(path, lock, {"subnet": net.subnet, "blocks": [], "allocations": {}})


def _read(net: networks.Network) -> dict:
    path, lock = _paths(net)
    with jsonstore.locked(lock, shared=True):
        return jsonstore.read_json(path, {}) or {}


def pool_of(net: networks.Network) -> dict:
    """The pool's document in etcd, as this node's definition describes it."""
    return {"subnet": net.subnet, "block_size": net.block_size, "masquerade": net.masquerade}


def check_pool(net: networks.Network) -> None:
    """Refuse a bad block size: more than 32, or larger than the pool."""
    if not isinstance(net.block_size, int) or net.block_size > 32:
        raise PyctrError(f"invalid block size {net.block_size}: use a prefix length of at most 32")
    if net.block_size < net.network.prefixlen:
        raise PyctrError(f"block size /{net.block_size} is larger than the pool {net.subnet}")


def join(net: networks.Network) -> None:
    """`network create` on this node: define the pool in etcd, or find it defined with the same
    arguments, and record this node as a member (one transaction when the pool is new)."""
    store = datastore.Datastore(net.datastore)
    wanted = pool_of(net)
    member = datastore.member_key(net.name, datastore.node_name())
    created, existing = store.create(datastore.pool_key(net.name), wanted, also={member: {}})
    if created:
        return
    if existing != wanted:
        raise ConflictError(f"network {net.name} is defined in {net.datastore} with other arguments: "
                            f"subnet {existing.get('subnet')}, block size {existing.get('block_size')}, "
                            f"masquerade {str(existing.get('masquerade')).lower()}")
    store.put(member, {})


def leave(net: networks.Network) -> None:
    """`network rm` on this node: free its addresses, endpoints and blocks; the pool and the
    network's policies go with the last member."""
    store = datastore.Datastore(net.datastore)
    node = datastore.node_name()
    ours = [key for prefix in (datastore.ipam_prefix(net.name), datastore.endpoints_prefix(net.name),
                               datastore.blocks_prefix(net.name))
            for key, doc in store.get_prefix(prefix).items() if doc.get("node") == node]
    store.delete(*ours, datastore.member_key(net.name, node))
    _tell_agent()
    if not store.get_prefix(f"{datastore.member_key(net.name, '')}"):
        store.delete(datastore.pool_key(net.name), *store.get_prefix(datastore.policies_prefix(net.name)))


def node_blocks(net: networks.Network) -> list[str]:
    """The blocks this node holds, as its file records them (for the blackhole routes)."""
    return list(_read(net).get("blocks", []))


def allocations(net: networks.Network) -> dict[str, str]:
    """This node's addresses on `net`: {address: container id}."""
    return dict(_read(net).get("allocations", {}))


def allocate(net: networks.Network, container_id: str, labels: dict | None = None) -> ipaddress.IPv4Address:
    """The container's address: the one it holds, else the next free one in this node's blocks,
    claiming a block first when they are full. The claim publishes the endpoint with `labels`."""
    node = datastore.node_name()
    with _updating(net) as doc:
        held = [ip for ip, owner in doc["allocations"].items() if owner == container_id]
        if held:
            return ipaddress.IPv4Address(held[0])
        store = datastore.Datastore(net.datastore)
        record = {"container": container_id, "node": node}
        endpoint = {**record, "labels": dict(labels or {})}
        while True:
            for address in _candidates(net, doc):
                created, owner = store.create(f"{datastore.ipam_prefix(net.name)}{address}", record,
                                              also={f"{datastore.endpoints_prefix(net.name)}{address}": endpoint})
                if created:
                    doc["allocations"][str(address)] = container_id
                    return address
                # Taken in etcd though not in our file (a file lost or restored): note it, go on.
                doc["allocations"][str(address)] = (owner or {}).get("container", "?")
            doc["blocks"].append(_claim_block(net, store, node, doc["blocks"]))
            _tell_agent()


def release(net: networks.Network, container_id: str) -> None:
    """Free the container's addresses, in etcd and in the node's file. Idempotent."""
    path, _ = _paths(net)
    if not path.exists():
        return
    with _updating(net) as doc:
        mine = [ip for ip, owner in doc["allocations"].items() if owner == container_id]
        if not mine:
            return
        datastore.Datastore(net.datastore).delete(*(f"{prefix}{ip}" for ip in mine for prefix in (
            datastore.ipam_prefix(net.name), datastore.endpoints_prefix(net.name))))
        for ip in mine:
            del doc["allocations"][ip]


def _tell_agent() -> None:
    """The node agent (if this host runs one) tells BIRD at once, not at its next poll: the
    other nodes learn a new block, or drop a freed one, within a fraction of a second."""
    from pyctr.network import node  # here: only a change of blocks needs it

    node.wake_agent()


def _candidates(net: networks.Network, doc: dict):
    """Free addresses of this node's blocks, lowest first; the pool's own network and broadcast
    addresses are never handed out (a block's are: every container has a /32)."""
    pool = net.network
    never = {pool.network_address, pool.broadcast_address}
    for block in doc["blocks"]:
        for address in ipaddress.IPv4Network(block):
            if address not in never and str(address) not in doc["allocations"]:
                yield address


def _claim_block(net: networks.Network, store: datastore.Datastore, node: str, held: list[str]) -> str:
    """A block for this node: one etcd already gives it that its file lacks, else the first free."""
    prefix = datastore.blocks_prefix(net.name)
    claimed = {key[len(prefix):]: doc.get("node") for key, doc in store.get_prefix(prefix).items()}
    for block, owner in sorted(claimed.items(), key=lambda item: ipaddress.IPv4Network(item[0])):
        if owner == node and block not in held:
            return block  # ours already (a node that lost its file gets its blocks back)
    for block in net.network.subnets(new_prefix=net.block_size):
        if str(block) in claimed:
            continue
        created, _ = store.create(f"{prefix}{block}", {"node": node})
        if created:
            return str(block)
    raise PyctrError(f"network {net.name} has no free block left in its pool {net.subnet}")
