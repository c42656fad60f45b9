"""The bridge driver, Docker's default: containers share a layer-2 segment behind NAT.

    node:       bridge (holds the gateway address) -- vethXXXX ... (one per container)
                ip_forward=1; nft: masquerade SUBNET leaving by any other interface,
                forward accepts, DNAT for published ports; unless --no-isolate, nothing
                enters the bridge but replies and published ports
    container:  eth0 IP/PREFIX, default via GATEWAY
"""

import ipaddress

from pyctr.network import iproute, networks, nft, sysctl, veth
from pyctr.network.driver import Endpoint, NetworkDriver, PortMapping
from pyctr.network.ports import check_free
from pyctr.runtime.errors import ConflictError, PyctrError


class BridgeDriver(NetworkDriver):
    publishes_ports = True

    def check_definition(self, net: networks.Network) -> None:
        if net.cluster_cidr:
            raise PyctrError("--cluster-cidr is for routed networks")
        networks.check_interface_name(net.bridge)
        for other in networks.all_networks():
            if other.bridge == net.bridge and other.name != net.name:
                raise ConflictError(f"bridge {net.bridge} is already used by network {other.name}")
        if iproute.link_exists(net.bridge):
            raise ConflictError(f"bridge name {net.bridge} is in use by an existing interface")
        gateway = ipaddress.IPv4Address(net.gateway)
        subnet = net.network
        if gateway not in subnet or gateway in (subnet.network_address, subnet.broadcast_address):
            raise PyctrError(f"gateway {gateway} is not a host address of {subnet}")

    def is_ready(self, net: networks.Network) -> bool:
        return iproute.link_exists(net.bridge)

    def create(self, net: networks.Network) -> None:
        prefixlen = net.network.prefixlen
        link = iproute.link(net.bridge)
        commands = []
        if link is None:
            commands.append(["link", "add", net.bridge, "type", "bridge"])
        elif _kind(link) != "bridge":
            raise ConflictError(f"bridge name {net.bridge} is in use by a non-bridge interface")
        held = {(a.get("local"), a.get("prefixlen")) for a in (link or {}).get("addr_info", [])}
        if (net.gateway, prefixlen) not in held:
            commands.append(["addr", "add", f"{net.gateway}/{prefixlen}", "dev", net.bridge])
        commands.append(["link", "set", net.bridge, "up"])
        iproute.run(commands)
        sysctl.write("net.ipv4.ip_forward", 1)
        nft.replace_rules(nft.network_owner(net.name), _network_rules(net))

    def remove(self, net: networks.Network) -> None:
        nft.delete_rules(nft.network_owner(net.name))
        link = iproute.link(net.bridge)
        if link is not None and _kind(link) == "bridge":
            iproute.run([["link", "del", net.bridge]], missing_ok=True)

    def attach(self, net: networks.Network, container_id: str, pid: int,
               address: ipaddress.IPv4Address, ports: list[PortMapping]) -> Endpoint:
        host_name = veth.host_interface(container_id)
        mac = veth.mac_address(address)
        prefixlen = net.network.prefixlen
        try:
            veth.delete_host_end(host_name)  # of a previous run, if the kernel still tears down its netns
            iproute.run([veth.add_pair(host_name, pid, mac),
                         ["link", "set", host_name, "master", net.bridge, "up"]])
            veth.configure_container_side(pid, address, prefixlen, [f"default via {net.gateway}"])
            if ports:
                owner = nft.container_owner(container_id)
                nft.replace_rules(owner, _port_rules(net, address, ports),
                                  check=lambda table: check_free(ports, nft.dnat_ports(table, owner)))
        except BaseException:
            self.detach(net, container_id, ports)
            raise
        return Endpoint(interface=veth.CONTAINER_INTERFACE, host_interface=host_name, mac=mac,
                        address=address, prefixlen=prefixlen, gateway=net.gateway,
                        routes=[f"default via {net.gateway} dev eth0"], ports=list(ports))

    def detach(self, net: networks.Network, container_id: str, ports: list[PortMapping]) -> None:
        veth.delete_host_end(veth.host_interface(container_id))
        if ports:  # only published ports have rules of their own (listing the table costs a fork)
            nft.delete_rules(nft.container_owner(container_id))


def _kind(link: dict) -> str | None:
    return (link.get("linkinfo") or {}).get("info_kind")


def _network_rules(net: networks.Network) -> list[nft.Rule]:
    bridge = f'"{net.bridge}"'
    rules = []
    if net.masquerade:
        # What leaves the node (any interface but the bridge) takes the node's address.
        rules.append(nft.Rule("postrouting", f"ip saddr {net.subnet} oifname != {bridge} masquerade"))
    # A container reaching a published port of its own node is sent back onto the bridge; without
    # NAT the answer would come straight from the other container and not match the connection.
    rules.append(nft.Rule("postrouting", f"oifname {bridge} ip saddr {net.subnet} ct status dnat masquerade"))
    rules.append(nft.Rule("forward", f"iifname {bridge} accept"))
    rules.append(nft.Rule("forward", f"oifname {bridge} ct state established,related accept"))
    rules.append(nft.Rule("forward", f"oifname {bridge} ct status dnat accept"))
    if net.isolate:
        # Docker's DOCKER-ISOLATION and its drop of unpublished ports in one: into the bridge
        # come only replies and published ports (from anywhere, other networks included).
        # Traffic between two containers of the network shows here too when br_netfilter is loaded.
        rules.append(nft.Rule("isolation", f"iifname {bridge} oifname {bridge} accept"))
        rules.append(nft.Rule("isolation", f"oifname {bridge} ct state established,related accept"))
        rules.append(nft.Rule("isolation", f"oifname {bridge} ct status dnat accept"))
        rules.append(nft.Rule("isolation", f"oifname {bridge} drop"))
    return rules


def _port_rules(net: networks.Network, address: ipaddress.IPv4Address,
                ports: list[PortMapping]) -> list[nft.Rule]:
    rules = []
    for p in ports:
        match = f"ip daddr {p.host_ip} " if p.host_ip else "fib daddr type local "
        match += f"{p.protocol} dport {p.host_port}"
        target = f"dnat to {address}:{p.container_port}"
        # prerouting: from other hosts and from containers; output: from the node itself.
        rules.append(nft.Rule("prerouting", f"{match} {target}"))
        rules.append(nft.Rule("output", f"ip daddr != 127.0.0.0/8 {match} {target}"))
    return rules
