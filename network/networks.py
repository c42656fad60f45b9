"""Network definitions on disk: $PYCTR_ROOT/networks/NAME/network.json, one per network.

This module knows names, subnets and the rules a definition must follow. It never touches the
kernel: drivers turn a definition into bridges, routes and nftables rules.
"""

import ipaddress
import json
import os
import re
import time
from collections import namedtuple
from pathlib import Path

from pyctr.network import hostroutes
from pyctr.runtime import jsonstore, settings
from pyctr.runtime.errors import ConflictError, NotFoundError, PyctrError

DEFAULT_NETWORK = "bridge"
DEFAULT_BRIDGE = "pyctr0"
# Networks that exist without a definition: the container keeps the host's netns, or has only lo.
BUILTIN_NETWORKS = ("none", "host")
# Where subnets are picked from when none is given, in Docker's order.
DEFAULT_POOLS = [f"172.{n}.0.0/16" for n in range(17, 32)] + [
    f"192.168.{n}.0/20" for n in range(0, 256, 16)]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_IFNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")


# Plain classes rather than dataclasses: `import dataclasses` costs about 8 ms (it imports
# inspect), and every start on a network loads a definition.


class Route(namedtuple("Route", "destination via")):
    """A route to another node's block: `ip route replace DESTINATION via VIA` (two strings)."""
    __slots__ = ()


class Network:
    """A network's definition, as network.json holds it."""

    def __init__(self, name: str, driver: str, subnet: str, id: str | None = None,
                 gateway: str | None = None, bridge: str | None = None, masquerade: bool = False,
                 isolate: bool = True, cluster_cidr: str | None = None,
                 routes: list[Route] | None = None, created: str | None = None,
                 datastore: str | None = None, block_size: int | None = None,
                 default_deny: bool = False):
        self.name = name
        self.driver = driver
        self.subnet = subnet
        self.id = id or os.urandom(32).hex()  # 64 hex digits, as Docker's network IDs
        self.gateway = gateway  # bridge: the bridge's address; routed: none (169.254.1.1 is used)
        self.bridge = bridge
        self.masquerade = masquerade
        # bridge: only replies and published ports enter the bridge (Docker's isolation between
        # networks, and its drop of unpublished ports); --no-isolate opens it to whatever routes there.
        self.isolate = isolate
        self.cluster_cidr = cluster_cidr  # routed: traffic to it keeps its source address
        self.routes = list(routes or [])
        self.created = created or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        # routed, cluster-wide: subnet is the pool in the etcd at datastore (etcd://HOST:PORT),
        # handed out to nodes in blocks of /block_size (pyctr.network.clusteripam).
        self.datastore = datastore
        self.block_size = block_size
        # Every container is isolated both ways until a policy allows traffic (policyrules.py).
        self.default_deny = default_deny

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)

    @property
    def dir(self) -> Path:
        return network_dir(self.name)

    @classmethod
    def from_json(cls, data: dict) -> "Network":
        data = dict(data)
        data["routes"] = [Route(**r) for r in data.get("routes", [])]
        return cls(**data)

    def to_json(self) -> dict:
        data = dict(vars(self))
        data["routes"] = [r._asdict() for r in self.routes]
        if not self.datastore:  # a node-local network's file stays as it was
            del data["datastore"], data["block_size"]
        if not self.default_deny:
            del data["default_deny"]
        return data


def networks_dir() -> Path:
    return settings.current().networks_dir


def network_dir(name: str) -> Path:
    return networks_dir() / name


def definitions_lock():
    """Held while a definition is created, changed or removed."""
    return jsonstore.locked(networks_dir() / ".lock")


def load(name: str) -> Network:
    data = jsonstore.read_json(network_dir(name) / "network.json")
    if data is None:
        raise NotFoundError(f"network {name} not found")
    return Network.from_json(data)


def exists(name: str) -> bool:
    return (network_dir(name) / "network.json").exists()


def save(net: Network) -> None:
    jsonstore.write_json(net.dir / "network.json", net.to_json())


def delete(name: str) -> None:
    import shutil  # only here: it costs 2 ms, and a start does not remove networks

    shutil.rmtree(network_dir(name), ignore_errors=True)


def all_networks() -> list[Network]:
    base = networks_dir()
    if not base.is_dir():
        return []
    found = []
    for path in sorted(base.glob("*/network.json")):
        try:
            found.append(Network.from_json(json.loads(path.read_text())))
        except (OSError, ValueError, TypeError):
            continue  # a half-written or foreign file is not a network
    return found


def check_name(name: str) -> None:
    if not _NAME.match(name):
        raise PyctrError(f"invalid network name {name!r}: use letters, digits, '_', '.' or '-'")
    if name in BUILTIN_NETWORKS:
        raise ConflictError(f"network {name} is built in and cannot be created or removed")


def parse_subnet(text: str) -> ipaddress.IPv4Network:
    try:
        subnet = ipaddress.IPv4Network(text, strict=True)
    except ValueError as e:
        raise PyctrError(f"invalid subnet {text!r}: {e}") from None
    if subnet.prefixlen > 30:
        raise PyctrError(f"subnet {subnet} is too small: use a /30 or larger")
    return subnet


def parse_address(text: str, what: str = "address") -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        raise PyctrError(f"invalid {what} {text!r}: expected an IPv4 address") from None


def check_interface_name(name: str) -> None:
    if not _IFNAME.match(name):
        raise PyctrError(f"invalid bridge name {name!r}: at most 15 letters, digits, '_', '.' or '-'")


def check_free_subnet(subnet: ipaddress.IPv4Network, ignore: str | None = None, pool: bool = False) -> None:
    """Refuse a subnet that overlaps another pyctr network or a route of this node (`pool`: a
    cluster network's pool, inside which routes to other nodes' blocks are expected)."""
    for other in all_networks():
        if other.name != ignore and other.network.overlaps(subnet):
            raise ConflictError(f"subnet {subnet} overlaps network {other.name} ({other.subnet})")
    route = hostroutes.overlapping(subnet, pool=pool)
    if route is not None:
        raise ConflictError(f"subnet {subnet} overlaps the host route '{route}'")


def pick_subnet() -> ipaddress.IPv4Network:
    for candidate in DEFAULT_POOLS:
        subnet = ipaddress.IPv4Network(candidate)
        try:
            check_free_subnet(subnet)
            return subnet
        except ConflictError:
            continue
    raise PyctrError("no free subnet left in the default pools: give one with --subnet")


def first_host(subnet: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    return subnet.network_address + 1


def containers_using(name: str) -> list[str]:
    """IDs (or names) of the container records whose network is `name`."""
    base = settings.current().containers_dir
    users = []
    for path in sorted(base.glob("*/config.json")) if base.is_dir() else []:
        record = jsonstore.read_json(path, {}) or {}
        if (record.get("HostConfig") or {}).get("NetworkMode") == name:
            users.append(record.get("Name", "").lstrip("/") or record.get("Id", path.parent.name)[:12])
    return users


def container_ids() -> set[str]:
    base = settings.current().containers_dir
    ids = set()
    for path in base.glob("*/config.json") if base.is_dir() else []:
        record = jsonstore.read_json(path, {}) or {}
        ids.add(record.get("Id") or path.parent.name)
    return ids
