"""Defining and removing networks: `pyctr network create|rm`, and the default network `bridge`,
which is defined the first time a container asks for it."""

from pyctr.network import networks
from pyctr.network.driver import get_driver
from pyctr.runtime.errors import ConflictError, PyctrError

# Calico's default block: 64 addresses.
DEFAULT_BLOCK_SIZE = 26


def define(name: str, driver_name: str = "bridge", subnet: str | None = None,
           gateway: str | None = None, bridge: str | None = None,
           masquerade: bool | None = None, cluster_cidr: str | None = None,
           isolate: bool | None = None, datastore: str | None = None,
           block_size: int | None = None, default_deny: bool = False) -> networks.Network:
    """Check, save and build a network; on any failure nothing is left behind. A routed network
    with a datastore is cluster-wide: its pool is defined (or found) in etcd first."""
    networks.check_name(name)
    driver = get_driver(driver_name)
    if not driver.uses_ipam:
        raise PyctrError(f"the {driver_name} driver has one network, the built-in '{driver_name}'")
    with networks.definitions_lock():
        net = _new_definition(name, driver_name, subnet, gateway, bridge, masquerade, cluster_cidr,
                              isolate, datastore, block_size)
        if default_deny:
            from pyctr.network import policyrules

            policyrules.check_network(net)
            net.default_deny = True
        if net.datastore:
            _cluster().join(net)
        try:
            networks.save(net)
            try:
                driver.create(net)
                if net.default_deny:
                    policyrules.sync(net)
            except BaseException:
                try:
                    if net.default_deny:
                        policyrules.remove(net)
                    driver.remove(net)
                finally:
                    networks.delete(name)
                raise
        except BaseException:
            if net.datastore:
                _cluster().leave(net)
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
        if net.datastore:
            _cluster().leave(net)  # first: an etcd that is down leaves the network as it was
        from pyctr.network import policystore

        # A cluster network's node agent may have built a table from etcd: remove it whatever
        # etcd says now (leave() took the last member's policies with it).
        if net.datastore or policystore.enforced(net):
            from pyctr.network import policyrules

            policyrules.remove(net)
        get_driver(net.driver).remove(net)
        networks.delete(name)


def _cluster():
    # Imported only for cluster networks: it brings the etcd client.
    from pyctr.network import clusteripam

    return clusteripam


def _new_definition(name, driver_name, subnet, gateway, bridge, masquerade, cluster_cidr,
                    isolate, datastore=None, block_size=None) -> networks.Network:
    if networks.exists(name):
        raise ConflictError(f"network {name} already exists")
    routed = driver_name == "routed"
    if subnet:
        chosen = networks.parse_subnet(subnet)
        networks.check_free_subnet(chosen, pool=routed and bool(datastore))
    elif routed and datastore:
        raise PyctrError("a cluster network needs --subnet: the cluster's pool, e.g. 172.19.0.0/16")
    elif routed:
        raise PyctrError("a routed network needs --subnet: this node's block, e.g. 172.19.35.0/24")
    else:
        chosen = networks.pick_subnet()
    if gateway:
        networks.parse_address(gateway, "gateway")
    net = networks.Network(name=name, driver=driver_name, subnet=str(chosen),
                           masquerade=(not routed) if masquerade is None else masquerade,
                           cluster_cidr=cluster_cidr)
    if datastore and not routed:
        raise PyctrError("--datastore is for routed networks (a cluster-wide pool)")
    if routed and datastore:
        net.datastore = datastore
        net.block_size = DEFAULT_BLOCK_SIZE if block_size is None else block_size
        _cluster().check_pool(net)
    elif block_size is not None:
        raise PyctrError("--block-size is for cluster networks: give --datastore etcd://HOST:PORT")
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
