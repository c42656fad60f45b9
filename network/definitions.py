"""Defining and removing networks: `pyctr network create|rm`, and the default network `bridge`,
which is defined the first time a container asks for it."""

from pyctr.network import networks
from pyctr.network.driver import get_driver
from pyctr.runtime.errors import ConflictError, PyctrError


def define(name: str, driver_name: str = "bridge", subnet: str | None = None,
           gateway: str | None = None, bridge: str | None = None,
           masquerade: bool | None = None, cluster_cidr: str | None = None,
           isolate: bool | None = None) -> networks.Network:
    """Check, save and build a network; on any failure nothing is left behind."""
    networks.check_name(name)
    driver = get_driver(driver_name)
    if not driver.uses_ipam:
        raise PyctrError(f"the {driver_name} driver has one network, the built-in '{driver_name}'")
    with networks.definitions_lock():
        net = _new_definition(name, driver_name, subnet, gateway, bridge, masquerade, cluster_cidr,
                              isolate)
        networks.save(net)
        try:
            driver.create(net)
        except BaseException:
            try:
                driver.remove(net)
            finally:
                networks.delete(name)
            raise
    return net


def define_default() -> networks.Network:
    """The network called `bridge`, saved on first use; the runtime's connect() builds it."""
    with networks.definitions_lock():
        if networks.exists(networks.DEFAULT_NETWORK):
            return networks.load(networks.DEFAULT_NETWORK)
        net = _new_definition(networks.DEFAULT_NETWORK, "bridge", None, None,
                              networks.DEFAULT_BRIDGE, True, None, True)
        networks.save(net)
        return net


def remove(name: str) -> None:
    """`network rm`: refused while a container uses the network."""
    if name in networks.BUILTIN_NETWORKS:
        raise ConflictError(f"network {name} is built in and cannot be removed")
    with networks.definitions_lock():
        net = networks.load(name)
        users = networks.containers_using(name)
        if users:
            raise ConflictError(f"network {name} is in use by container(s): {', '.join(users)}")
        get_driver(net.driver).remove(net)
        networks.delete(name)


def _new_definition(name, driver_name, subnet, gateway, bridge, masquerade, cluster_cidr,
                    isolate) -> networks.Network:
    if networks.exists(name):
        raise ConflictError(f"network {name} already exists")
    routed = driver_name == "routed"
    if subnet:
        chosen = networks.parse_subnet(subnet)
        networks.check_free_subnet(chosen)
    elif routed:
        raise PyctrError("a routed network needs --subnet: this node's block, e.g. 172.19.35.0/24")
    else:
        chosen = networks.pick_subnet()
    if gateway:
        networks.parse_address(gateway, "gateway")
    net = networks.Network(name=name, driver=driver_name, subnet=str(chosen),
                           masquerade=(not routed) if masquerade is None else masquerade,
                           cluster_cidr=cluster_cidr)
    if driver_name != "bridge" and isolate:
        raise PyctrError("--isolate is for bridge networks (routed networks are plain layer 3)")
    net.isolate = driver_name == "bridge" and isolate is not False
    if cluster_cidr:
        net.cluster_cidr = str(networks.parse_subnet(cluster_cidr))
    if driver_name == "bridge":
        net.gateway = gateway or str(networks.first_host(chosen))
        net.bridge = bridge or (networks.DEFAULT_BRIDGE if name == networks.DEFAULT_NETWORK
                                else "br-" + net.id[:12])
    else:
        net.gateway, net.bridge = gateway, bridge
    get_driver(driver_name).check_definition(net)
    return net
