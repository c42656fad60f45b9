"""The routed driver, Calico's way: pure layer 3, no bridge, no NAT between containers.

    node:       blackhole SUBNET (this node's block; on a cluster network, each block the node
                holds of the pool: see clusteripam); per container IP/32 dev vethXXXX scope link,
                and on vethXXXX rp_filter, route_localnet, proxy_arp, proxy_delay=0, forwarding;
                routes to other nodes' blocks (`pyctr network route add`)
    container:  eth0 IP/32; 169.254.1.1 dev eth0 scope link; default via 169.254.1.1 dev eth0
                (the host end answers ARP for 169.254.1.1 through proxy_arp)
"""

import ipaddress

from pyctr.network import hostroutes, iproute, networks, nft, sysctl, veth
from pyctr.network.driver import Endpoint, NetworkDriver, PortMapping
from pyctr.runtime.errors import PyctrError

LINK_LOCAL_GATEWAY = "169.254.1.1"

# Per host veth, as the walk-through sets them (section, name, value).
HOST_VETH_SYSCTLS = [
    ("conf", "rp_filter", 1),  # drop a container's packets whose source is not its own address
    ("conf", "route_localnet", 1),
    ("conf", "proxy_arp", 1),  # answer the container's ARP for 169.254.1.1
    ("neigh", "proxy_delay", 0),
    ("conf", "forwarding", 1),
]


class RoutedDriver(NetworkDriver):

    def check_definition(self, net: networks.Network) -> None:
        if net.bridge:
            raise PyctrError("--bridge is for bridge networks")
        if net.gateway:
            raise PyctrError(f"routed networks have no gateway: containers route via {LINK_LOCAL_GATEWAY}")
        if net.cluster_cidr:
            cluster = networks.parse_subnet(net.cluster_cidr)
            if not net.network.subnet_of(cluster):
                raise PyctrError(f"subnet {net.subnet} is not inside the cluster CIDR {cluster}")

    def is_ready(self, net: networks.Network) -> bool:
        routes = hostroutes.routes()
        blackholes = {str(r.network) for r in routes if r.device == "*"}
        via = {(str(r.network), str(r.gateway)) for r in routes if r.gateway}
        return set(_blackholes(net)) <= blackholes and all((r.destination, r.via) in via for r in net.routes)

    def create(self, net: networks.Network) -> None:
        commands = [*(["route", "replace", "blackhole", block] for block in _blackholes(net)),
                    *(_replace(route) for route in net.routes)]
        if commands:  # a cluster network holds no block before its first container
            iproute.run(commands)
        sysctl.write("net.ipv4.ip_forward", 1)
        nft.replace_rules(nft.network_owner(net.name), _network_rules(net))

    def remove(self, net: networks.Network) -> None:
        nft.delete_rules(nft.network_owner(net.name))
        commands = [*(_delete(route) for route in net.routes),
                    *(["route", "del", "blackhole", block] for block in _blackholes(net))]
        if commands:
            iproute.run(commands, missing_ok=True)

    def attach(self, net: networks.Network, container_id: str, pid: int,
               address: ipaddress.IPv4Address, ports: list[PortMapping]) -> Endpoint:
        if ports:
            raise PyctrError(f"network {net.name} is routed: publish ports on a bridge network")
        host_name = veth.host_interface(container_id)
        mac = veth.mac_address(address)
        container_routes = [f"{LINK_LOCAL_GATEWAY} dev eth0 scope link",
                            f"default via {LINK_LOCAL_GATEWAY} dev eth0"]
        try:
            veth.delete_host_end(host_name)  # of a previous run, if the kernel still tears down its netns
            # `replace`: a leftover /32 of an earlier run must not fail the start.
            iproute.run([veth.add_pair(host_name, pid, mac), ["link", "set", host_name, "up"],
                         ["route", "replace", f"{address}/32", "dev", host_name, "scope", "link"]])
            # Before eth0 has an address, so before any packet of the container's.
            for section, name, value in HOST_VETH_SYSCTLS:
                sysctl.write(sysctl.interface_key(section, host_name, name), value)
            veth.configure_container_side(pid, address, 32, container_routes)
        except BaseException:
            self.detach(net, container_id, ports)
            raise
        return Endpoint(interface=veth.CONTAINER_INTERFACE, host_interface=host_name, mac=mac,
                        address=address, prefixlen=32, gateway=LINK_LOCAL_GATEWAY,
                        routes=container_routes)

    def detach(self, net: networks.Network, container_id: str, ports: list[PortMapping]) -> None:
        # The host route IP/32 dev vethXXXX goes with the link.
        veth.delete_host_end(veth.host_interface(container_id))


def _blackholes(net: networks.Network) -> list[str]:
    """What this node owns of the network, and so drops when no container has the address."""
    if net.datastore:
        from pyctr.network import clusteripam

        return clusteripam.node_blocks(net)
    return [net.subnet]


def node_owns(net: networks.Network, destination: ipaddress.IPv4Network) -> str | None:
    """The block of this node that `destination` overlaps, if any (a route there is refused)."""
    return next((b for b in _blackholes(net) if ipaddress.IPv4Network(b).overlaps(destination)), None)


def add_route(net: networks.Network, route: networks.Route) -> None:
    iproute.run([_replace(route)])


def delete_route(net: networks.Network, route: networks.Route) -> None:
    iproute.run([_delete(route)], missing_ok=True)


def _replace(route: networks.Route) -> list[str]:
    return ["route", "replace", route.destination, "via", route.via]


def _delete(route: networks.Route) -> list[str]:
    return ["route", "del", route.destination, "via", route.via]


def _network_rules(net: networks.Network) -> list[nft.Rule]:
    rules = [nft.Rule("forward", f"ip saddr {net.subnet} accept"),
             nft.Rule("forward", f"ip daddr {net.subnet} accept")]
    if net.masquerade:
        # Calico's natOutgoing: only what leaves the cluster takes the node's address.
        cluster = net.cluster_cidr or net.subnet
        rules.append(nft.Rule("postrouting", f"ip saddr {net.subnet} ip daddr != {cluster} masquerade"))
    return rules
