"""What the runtime asks of the network side. The runtime imports this module only for
containers on a real network (not `none` or `host`), so the network code stays off other paths.

The container dict is the record of pyctr.runtime.container (Docker-shaped keys):
  container["Id"], container["Name"], container["Config"]["Hostname"],
  container["HostConfig"]["NetworkMode"]     network name, e.g. "bridge" or "calico"
  container["HostConfig"]["IPAddress"]       the --ip asked for, or None
  container["HostConfig"]["PortBindings"]    Docker's shape: {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}
  container["NetworkSettings"]               what connect() returned last time (or {})
"""

import ipaddress
import os

from pyctr.network import iproute, ipam, networks, ports
from pyctr.network.driver import Endpoint, get_driver
from pyctr.runtime.errors import PyctrError


def validate(container: dict) -> None:
    """At create time: refuse a bad --network, --ip or -p with a PyctrError (exit 125)."""
    name = _network_mode(container)
    requested = _requested_address(container)
    mappings = ports.from_bindings(_host_config(container).get("PortBindings"))
    if name in networks.BUILTIN_NETWORKS:
        if requested is not None:
            raise PyctrError(f"--ip needs a network with addresses, not --network {name}")
        if mappings:
            raise PyctrError(f"-p needs a bridge network: --network {name} has no ports to publish")
        return
    net = _load(name)
    driver = get_driver(net.driver)
    if mappings and not driver.publishes_ports:
        raise PyctrError(f"-p needs a bridge network: network {name} uses the {net.driver} driver")
    if requested is not None:
        ipam.check_requested(net, requested)
        if ipam.is_taken(net, requested, container.get("Id", "")):
            raise PyctrError(f"address {requested} is already in use on network {name}")
    if mappings:
        # Early, for a clear refusal that leaves nothing behind; attach() checks again, atomically.
        from pyctr.network import nft

        ports.check_free(mappings, nft.published_ports(nft.container_owner(container.get("Id", ""))))


def connect(container: dict, pid: int) -> dict:
    """Attach the container whose PID 1 has host PID `pid` (its netns exists, its program has
    not started). Returns Docker's NetworkSettings: IPAddress, IPPrefixLen, Gateway, MacAddress,
    Ports, Networks{NAME: {...}}."""
    name = _network_mode(container)
    if name in networks.BUILTIN_NETWORKS:
        return {"Networks": {name: {}}, "Ports": {}}
    net = _load(name)
    driver = get_driver(net.driver)
    mappings = ports.from_bindings(_host_config(container).get("PortBindings"))
    container_id = container["Id"]
    address = None
    if driver.uses_ipam:
        labels = (container.get("Config") or {}).get("Labels") or {}
        address = ipam.allocate(net, container_id, _requested_address(container), labels)
    try:
        if not driver.is_ready(net):
            with networks.definitions_lock():
                if not driver.is_ready(net):
                    driver.create(net)
        endpoint = driver.attach(net, container_id, pid, address, mappings)
        try:
            _enforce_policies(net, joining=container_id)  # before the container's first packet
        except BaseException:
            driver.detach(net, container_id, mappings)
            raise
    except BaseException:
        if address is not None:
            ipam.release(net, container_id)
        raise
    return _network_settings(net, endpoint, container_id, pid)


def disconnect(container: dict) -> None:
    """The container stopped (or its monitor was SIGKILLed): remove host-side leftovers such as
    port rules and host routes. Idempotent."""
    name = _network_mode(container)
    if name in networks.BUILTIN_NETWORKS or not networks.exists(name):
        return
    _detach(networks.load(name), container)


def release(container: dict) -> None:
    """The container is removed: free its address. Idempotent."""
    name = _network_mode(container)
    if name in networks.BUILTIN_NETWORKS or not networks.exists(name):
        return
    net = networks.load(name)
    # `rm -f` after a SIGKILLed pyctr may come without a disconnect(): leave nothing behind.
    _detach(net, container)
    ipam.release(net, container["Id"])


def _detach(net: networks.Network, container: dict) -> None:
    """The driver's detach(), once the kernel has had its moment: when PID 1 has exited, the
    kernel destroys the container's netns, and the veth pair with it, within a few ms. Deleting
    the host end meanwhile (`ip link del`) would wait for that teardown and an RCU grace period
    besides: about 15 ms of every `run --rm`. If the host end is still there after the wait (the
    netns outlives PID 1 when another process holds it), detach() deletes it."""
    settings = container.get("NetworkSettings") or {}
    host_end = ((settings.get("Networks") or {}).get(net.name) or {}).get("HostInterface")
    sandbox = settings.get("SandboxKey")  # /proc/PID/ns/net of PID 1, gone with PID 1
    if host_end and sandbox and not os.path.exists(sandbox):
        iproute.wait_until_gone(host_end, timeout=0.05)
    get_driver(net.driver).detach(net, container["Id"], _mappings(container))
    _enforce_policies(net, leaving=container["Id"])


def _enforce_policies(net: networks.Network, joining: str = "", leaving: str = "") -> None:
    """Rebuild the network's policy table with the container in (or out of) its sets and maps;
    a network without policies or --default-deny has no table, and this costs it one stat."""
    from pyctr.network import policystore

    if policystore.enforced(net):
        from pyctr.network import policyrules

        policyrules.sync(net, joining=joining, leaving=leaving)


def _mappings(container: dict) -> list:
    return ports.from_bindings(_host_config(container).get("PortBindings"))


def _host_config(container: dict) -> dict:
    return container.get("HostConfig") or {}


def _network_mode(container: dict) -> str:
    return _host_config(container).get("NetworkMode") or networks.DEFAULT_NETWORK


def _requested_address(container: dict) -> ipaddress.IPv4Address | None:
    text = _host_config(container).get("IPAddress")
    return networks.parse_address(text, "--ip address") if text else None


def _load(name: str) -> networks.Network:
    """The network's definition; the default network is defined on first use."""
    if name == networks.DEFAULT_NETWORK and not networks.exists(name):
        from pyctr.network import definitions

        return definitions.define_default()
    return networks.load(name)


def _network_settings(net: networks.Network, endpoint: Endpoint, container_id: str, pid: int) -> dict:
    address = str(endpoint.address) if endpoint.address else ""
    per_network = {
        "NetworkID": net.id,
        "EndpointID": (net.id[:32] + container_id)[:64],
        "Gateway": endpoint.gateway,
        "IPAddress": address,
        "IPPrefixLen": endpoint.prefixlen,
        "MacAddress": endpoint.mac,
        "HostInterface": endpoint.host_interface,
        "Routes": endpoint.routes,
    }
    return {
        "Bridge": net.bridge or "",
        "SandboxKey": f"/proc/{pid}/ns/net",
        "Ports": ports.to_docker(endpoint.ports),
        "Gateway": endpoint.gateway,
        "IPAddress": address,
        "IPPrefixLen": endpoint.prefixlen,
        "MacAddress": endpoint.mac,
        "Networks": {net.name: per_network},
    }
