"""Handlers of `pyctr network …`; each takes the parsed arguments and returns an exit code."""

import hashlib
import ipaddress
import json

from pyctr.network import definitions, ipam, networks
from pyctr.runtime import jsonstore, settings
from pyctr.runtime.errors import NotFoundError, PyctrError


def cmd_create(args) -> int:
    # $PYCTR_DATASTORE only makes routed networks cluster-wide; bridges stay on their node.
    datastore = args.datastore
    if args.driver == "routed" or datastore:
        from pyctr.network import datastore as store

        datastore = store.url_from(datastore)
    net = definitions.define(args.name, args.driver, subnet=args.subnet, gateway=args.gateway,
                             bridge=args.bridge, masquerade=args.masquerade,
                             cluster_cidr=args.cluster_cidr, isolate=args.isolate,
                             datastore=datastore, block_size=args.block_size,
                             default_deny=args.default_deny)
    print(net.id)
    return 0


def cmd_ls(args) -> int:
    rows = [(_builtin_id(name), name, name, "") for name in networks.BUILTIN_NETWORKS]
    rows = [(*row, "local") for row in rows]
    # A network whose pool is in a datastore spans the cluster: Docker's "global" scope.
    rows += [(net.id[:12], net.name, net.driver, net.subnet, "global" if net.datastore else "local")
             for net in networks.all_networks()]
    rows.sort(key=lambda row: row[1])
    if args.quiet:
        for row in rows:
            print(row[1])
        return 0
    print(f"{'NETWORK ID':<14}{'NAME':<20}{'DRIVER':<10}{'SCOPE':<8}SUBNET")
    for net_id, name, driver, subnet, scope in rows:
        print(f"{net_id:<14}{name:<20}{driver:<10}{scope:<8}{subnet}".rstrip())
    return 0


def cmd_inspect(args) -> int:
    found = [_inspect(name) for name in args.names]
    print(json.dumps(found, indent=4))
    return 0


def cmd_rm(args) -> int:
    for name in args.names:
        definitions.remove(name)
        print(name)
    return 0


def cmd_route_add(args) -> int:
    from pyctr.network import routed

    net, route = _route_arguments(args)
    with networks.definitions_lock():
        net = networks.load(net.name)
        routed.add_route(net, route)
        net.routes = [r for r in net.routes if r.destination != route.destination] + [route]
        networks.save(net)
    return 0


def cmd_route_rm(args) -> int:
    from pyctr.network import routed

    net, route = _route_arguments(args)
    with networks.definitions_lock():
        net = networks.load(net.name)
        if route not in net.routes:
            raise NotFoundError(f"network {net.name} has no route {route.destination} via {route.via}")
        routed.delete_route(net, route)
        net.routes = [r for r in net.routes if r != route]
        networks.save(net)
    return 0


def cmd_route_ls(args) -> int:
    net = _routed_network(args.name)
    print(f"{'DESTINATION':<20}VIA")
    for route in net.routes:
        print(f"{route.destination:<20}{route.via}")
    return 0


def _routed_network(name: str) -> networks.Network:
    net = networks.load(name)
    if net.driver != "routed":
        raise PyctrError(f"network {name} uses the {net.driver} driver: routes are for routed networks")
    return net


def _route_arguments(args) -> tuple[networks.Network, networks.Route]:
    net = _routed_network(args.name)
    try:
        destination = ipaddress.IPv4Network(args.cidr, strict=True)
    except ValueError as e:
        raise PyctrError(f"invalid CIDR {args.cidr!r}: {e}") from None
    via = networks.parse_address(args.node_ip, "node address")
    if net.datastore:  # a cluster network: other nodes' blocks are inside the pool
        from pyctr.network import routed

        block = routed.node_owns(net, destination)
        if block is not None:
            raise PyctrError(f"{destination} overlaps this node's block {block} of network {net.name}")
    elif destination.overlaps(net.network):
        raise PyctrError(f"{destination} overlaps network {net.name}'s own block {net.subnet}")
    return net, networks.Route(destination=str(destination), via=str(via))


def _builtin_id(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:12]


def _inspect(name: str) -> dict:
    if name in networks.BUILTIN_NETWORKS:
        return {"Name": name, "Id": hashlib.sha256(name.encode()).hexdigest(), "Scope": "local",
                "Driver": name, "IPAM": {"Driver": "default", "Config": []}, "Containers": {},
                "Options": {}}
    net = networks.load(name)
    prefixlen = 32 if net.driver == "routed" else net.network.prefixlen
    containers = {}
    for address, container_id in sorted(ipam.allocations(net).items(),
                                        key=lambda item: ipaddress.IPv4Address(item[0])):
        record = jsonstore.read_json(settings.current().containers_dir / container_id / "config.json", {}) or {}
        containers[container_id] = {"Name": (record.get("Name") or "").lstrip("/"),
                                    "IPv4Address": f"{address}/{prefixlen}"}
    options = {}
    if net.bridge:
        options["com.docker.network.bridge.name"] = net.bridge
    options["com.docker.network.bridge.enable_ip_masquerade"] = str(net.masquerade).lower()
    if net.driver == "bridge":
        options["pyctr.isolate"] = str(net.isolate).lower()
    if net.cluster_cidr:
        options["pyctr.cluster_cidr"] = net.cluster_cidr
    if net.default_deny:
        options["pyctr.default_deny"] = "true"
    if net.datastore:
        options["pyctr.datastore"] = net.datastore
        options["pyctr.block_size"] = str(net.block_size)
    ipam_config = {"Subnet": net.subnet}
    if net.gateway:
        ipam_config["Gateway"] = net.gateway
    return {
        "Name": net.name,
        "Id": net.id,
        "Created": net.created,
        "Scope": "global" if net.datastore else "local",
        "Driver": net.driver,
        "EnableIPv6": False,
        "IPAM": {"Driver": "default", "Options": {}, "Config": [ipam_config]},
        "Internal": False,
        "Containers": containers,
        "Options": options,
        "Routes": [{"Destination": r.destination, "Via": r.via} for r in net.routes],
        "Labels": {},
    }


# --- network policy ----------------------------------------------------------------------------
def cmd_policy_apply(args) -> int:
    """Create or replace a policy (by its metadata.name); nothing changes if anything is wrong."""
    from pyctr.network import policyrules, policyspec

    net = _policy_network(args.name)
    try:
        if args.file == "-":
            import sys

            text = sys.stdin.read()
        else:
            with open(args.file) as f:
                text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise PyctrError(f"cannot read {args.file}: {getattr(e, 'strerror', None) or e}") from None
    try:
        policy = policyspec.parse(text)
    except policyspec.PolicyError as e:
        raise policyspec.PolicyError(f"{args.file}: {e}") from None
    name = policy["metadata"]["name"]

    def put(policies: dict) -> None:
        created = (policies.get(name) or {}).get("metadata", {}).get("creationTimestamp")
        policy["metadata"]["creationTimestamp"] = created or _now()
        policies[name] = policy

    policyrules.sync(net, change=put)
    print(name)
    return 0


def cmd_policy_ls(args) -> int:
    from pyctr.network import policyspec, policystore

    net = _policy_network(args.name)
    policies = policystore.load(net)
    if args.quiet:
        for name in policies:
            print(name)
        return 0
    rows = [(name, policyspec.selector_text(p["spec"]["podSelector"]), ",".join(p["spec"]["policyTypes"]),
             p["metadata"].get("creationTimestamp", "")) for name, p in policies.items()]
    width = max([len(row[0]) for row in rows] + [4]) + 2
    selector_width = max([len(row[1]) for row in rows] + [12]) + 2
    print(f"{'NAME':<{width}}{'POD-SELECTOR':<{selector_width}}{'POLICY-TYPES':<16}CREATED")
    for name, selector, types, created in rows:
        print(f"{name:<{width}}{selector:<{selector_width}}{types:<16}{created}".rstrip())
    return 0


def cmd_policy_inspect(args) -> int:
    from pyctr.network import policystore

    net = _policy_network(args.name)
    policies = policystore.load(net)
    missing = [name for name in args.policies if name not in policies]
    if missing:
        raise NotFoundError(f"network {net.name} has no policy {missing[0]}")
    print(json.dumps([policies[name] for name in args.policies], indent=4))
    return 0


def cmd_policy_rm(args) -> int:
    from pyctr.network import policyrules

    net = _policy_network(args.name)

    def drop(policies: dict) -> None:
        for name in args.policies:
            if name not in policies:
                raise NotFoundError(f"network {net.name} has no policy {name}")
            del policies[name]

    policyrules.sync(net, change=drop)
    for name in args.policies:
        print(name)
    return 0


def _policy_network(name: str) -> networks.Network:
    from pyctr.network import policyrules

    if name in networks.BUILTIN_NETWORKS:
        raise PyctrError(f"network {name} has no addresses: policies need a bridge or routed network")
    net = networks.load(name)
    policyrules.check_network(net)
    return net


def _now() -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
