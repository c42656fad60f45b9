"""What `network graph` draws, collected: from this host's kernel and pyctr's files (a network
without a datastore), or from the cluster's datastore and this node's BIRD (a cluster network).

Both return a pyctr.network.graph.Picture; neither changes anything.
"""

import ipaddress
import json
import os
import subprocess

from pyctr.network import datastore, ipam, networks, veth
from pyctr.network.graph import Bridge, Container, Host, Link, Picture
from pyctr.runtime import hosttools, jsonstore, settings
from pyctr.runtime.errors import PyctrError



def local_host(net: networks.Network) -> Picture:
    """This host alone: its addresses, the network's bridge (with its gateway address), the
    containers with their addresses and veths, and the routes that concern the network: host
    routes, the blackhole, routes to other nodes' blocks, and the default route."""
    picture = Picture(net.name, net.driver, net.subnet, "local")
    links = _ip_json("-4", "addr", "show")
    kernel_routes = _ip_json("-4", "route", "show")
    pyctr_bridges = {other.bridge for other in networks.all_networks() if other.bridge}
    host = picture.host(datastore.node_name())
    host.interfaces = [f"{link['ifname']} {a['local']}/{a['prefixlen']}" for link in links
                       if link["ifname"] != "lo" and link["ifname"] not in pyctr_bridges
                       for a in link.get("addr_info", []) if a.get("family") == "inet"]
    prefixlen = net.network.prefixlen if net.driver == "bridge" else 32
    if net.driver == "bridge":
        host.bridges.append(Bridge(net.bridge, f"{net.gateway}/{prefixlen}" if net.gateway else None))
    else:
        host.blocks.append(net.subnet)
    host.containers = _local_containers(net, prefixlen, _link_names())
    if net.masquerade:
        cluster = net.cluster_cidr if net.driver == "routed" else None
        host.masquerade = f"{net.subnet} to outside {cluster}" if cluster else net.subnet
    for route in kernel_routes:
        if not _concerns(net, route):
            continue
        host.routes.append(_route_text(route))
        next_hop = route.get("gateway")
        if next_hop:
            other = picture.host(next_hop)
            if route["dst"] != "default":
                other.blocks.append(route["dst"])
            picture.links.append(Link(host.name, other.name, route["dst"], "route"))
    return picture


def cluster(net: networks.Network) -> Picture:
    """The cluster network from its datastore: every node with its address, AS and blocks, the
    containers with their addresses (named where this node knows them), the gateway node with
    its masquerade, and this node's BGP sessions with their state, read from its BIRD."""
    store = datastore.Datastore(net.datastore)
    prefix = datastore.nodes_prefix()  # the nodes' documents, written by `pyctr node start`
    nodes = {key[len(prefix):]: doc for key, doc in store.get_prefix(prefix).items()}
    blocks = _suffixed(store.get_prefix(datastore.blocks_prefix(net.name)), datastore.blocks_prefix(net.name))
    allocations = _suffixed(store.get_prefix(datastore.ipam_prefix(net.name)), datastore.ipam_prefix(net.name))
    pool = store.get(datastore.pool_key(net.name)) or {}
    subnet = pool.get("subnet", net.subnet)
    picture = Picture(net.name, net.driver, subnet, "global")

    # Nodes first, gateways last (the walk-through's head node sits at the edge of the cluster).
    for name, doc in sorted(nodes.items(), key=lambda item: (bool(item[1].get("gateway")), item[0])):
        host = picture.host(name)
        host.interfaces = [doc["address"]] if doc.get("address") else []
        host.asn = doc.get("asn")
        host.gateway = bool(doc.get("gateway"))
        host.masquerade = doc.get("masquerade")
        host.out = doc.get("out")
    for block, doc in sorted(blocks.items(), key=lambda item: ipaddress.IPv4Network(item[0])):
        picture.host(doc.get("node", "?")).blocks.append(block)
    this_node = datastore.node_name()
    own_links = _link_names()
    for address, doc in sorted(allocations.items(), key=lambda item: ipaddress.IPv4Address(item[0])):
        container_id = doc.get("container", "?")
        node = doc.get("node", "?")
        host_end = veth.host_interface(container_id) if node == this_node else None
        picture.host(node).containers.append(Container(
            _container_name(container_id), f"{address}/32", host_end if host_end in own_links else None))
    if any(host.name == this_node for host in picture.hosts):
        local = picture.host(this_node)
        local.routes = [_route_text(r) for r in _ip_json("-4", "route", "show") if _concerns(net, r, subnet)]
    sessions = _bgp_sessions()
    if sessions:
        picture.host(this_node)  # a node that holds no block yet, or is not registered
    for session in sessions:
        # The peer by its address, else by the node name in the protocol's (mesh_NODE).
        peer = _host_for_peer(picture, session["peer"] or session["name"].removeprefix("mesh_"))
        established = session["state"] == "Established"
        picture.links.append(Link(this_node, peer.name, f"BGP {session['state']}", "bgp", up=established))
    return picture


def _bgp_sessions() -> list[dict]:
    """This node's BGP sessions (bird.sessions); [] when this node runs no BIRD (no control
    socket) or BIRD does not answer: the picture is drawn without them."""
    from pyctr.network import bird, node

    control_socket = node.Files().bird_ctl
    if not control_socket.exists():
        return []
    try:
        return bird.sessions(str(control_socket))
    except (PyctrError, OSError):
        return []


def _host_for_peer(picture: Picture, peer: str) -> Host:
    """The host a session's peer names: by name, else by address, else a new one."""
    for host in picture.hosts:
        if host.name == peer or peer in host.interfaces:
            return host
    return picture.host(peer)


def _local_containers(net: networks.Network, prefixlen: int, link_names: set[str]) -> list[Container]:
    found = []
    for address, container_id in sorted(ipam.allocations(net).items(),
                                        key=lambda item: ipaddress.IPv4Address(item[0])):
        host_end = veth.host_interface(container_id)
        found.append(Container(_container_name(container_id), f"{address}/{prefixlen}",
                               host_end if host_end in link_names else None))
    return found


def _container_name(container_id: str) -> str:
    """The container's name where this node has its record, else its short ID."""
    record = jsonstore.read_json(settings.current().containers_dir / container_id / "config.json", {}) or {}
    return (record.get("Name") or "").lstrip("/") or container_id[:12]


def _concerns(net: networks.Network, route: dict, pool: str | None = None) -> bool:
    """Whether a route belongs in the network's picture: the default route, routes by its
    bridge, and routes into its subnet, pool or cluster CIDR, or to a destination it routes."""
    if route.get("dst") == "default":
        return True
    if net.bridge and route.get("dev") == net.bridge:
        return True
    try:
        destination = ipaddress.IPv4Network(route["dst"])
    except (KeyError, ValueError):
        return False
    ranges = [net.subnet, pool, net.cluster_cidr, *(r.destination for r in net.routes)]
    return any(destination.overlaps(ipaddress.IPv4Network(r)) for r in ranges if r)


def _route_text(route: dict) -> str:
    """A route of `ip -json route` as `ip route` prints it, less the usual `proto boot`."""
    words = [] if route.get("type", "unicast") == "unicast" else [route["type"]]
    words.append(route.get("dst", "?"))
    for key, word in (("gateway", "via"), ("dev", "dev")):
        if route.get(key):
            words += [word, route[key]]
    if route.get("protocol") not in (None, "boot"):
        words += ["proto", route["protocol"]]
    if route.get("scope") not in (None, "global", "universe"):
        words += ["scope", route["scope"]]
    if route.get("prefsrc"):
        words += ["src", route["prefsrc"]]
    return " ".join(str(w) for w in words)


def _suffixed(found: dict, prefix: str) -> dict:
    return {key[len(prefix):]: doc for key, doc in found.items()}


def _link_names() -> set[str]:
    """The links of pyctr's netns, from /proc/net/dev (no process needed)."""
    with open("/proc/net/dev") as f:
        return {line.partition(":")[0].strip() for line in f.readlines()[2:]}


def _ip_json(*args: str) -> list[dict]:
    """`ip -json ARGS` in pyctr's netns."""
    done = subprocess.run([hosttools.tool("ip"), "-json", *args], capture_output=True, text=True,
                          env={**os.environ, "LC_ALL": "C"})
    if done.returncode != 0:
        raise PyctrError(f"ip {' '.join(args)}: {done.stderr.strip() or 'failed'}")
    return json.loads(done.stdout or "[]")
