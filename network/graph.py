"""`pyctr network graph NAME -o FILE.svg|.png`: a picture of a network, as the walk-through's
figures draw one.

Three parts: the model below (what the picture holds), the collectors that fill it
(pyctr.network.graph_sources: this host's kernel, or the cluster's datastore and the local BIRD),
and the renderer (pyctr.network.graph_render: graphviz). The file is written only once the
picture is drawn, so a failure leaves none.
"""

import os
import tempfile
from pathlib import Path

from pyctr.runtime.errors import PyctrError

# The format comes from the output file's suffix.
FORMATS = {".svg": "svg", ".png": "png"}


class Container:
    """A container on a host: its name (or short ID where the host does not know it), its
    address, and the host end of its veth (None when it is not running here)."""

    def __init__(self, name: str, address: str, veth: str | None = None):
        self.name = name
        self.address = address
        self.veth = veth


class Bridge:
    """A bridge network's bridge, with its gateway address (ADDRESS/PREFIX)."""

    def __init__(self, name: str, address: str | None):
        self.name = name
        self.address = address


class Host:
    """A node: where containers run, or the cluster's gateway (the walk-through's head node).

    interfaces are its own addresses ("eth0 10.141.0.1/16", or just "10.141.0.1" from the
    datastore); blocks are the parts of the network it owns (its routed block, or the blocks of
    the pool affine to it); routes are lines as `ip route` prints them."""

    def __init__(self, name: str, interfaces: list[str] | None = None, asn: int | None = None,
                 gateway: bool = False, masquerade: str | None = None, out: str | None = None):
        self.name = name
        self.interfaces = list(interfaces or [])
        self.asn = asn
        self.gateway = gateway
        self.masquerade = masquerade  # the CIDR whose traffic it NATs as it leaves
        self.out = out  # ... by this interface (None: by any other than the network's own)
        self.blocks: list[str] = []
        self.bridges: list[Bridge] = []
        self.containers: list[Container] = []
        self.routes: list[str] = []


class Link:
    """A line between two hosts (by name): a BGP session, or a route to another node's block."""

    def __init__(self, a: str, b: str, label: str, kind: str, up: bool = True):
        self.a = a
        self.b = b
        self.label = label
        self.kind = kind  # "bgp" or "route"
        self.up = up  # a BGP session that is not Established is drawn dashed


class Picture:
    """What `network graph` draws: the network, its hosts and the links between them. Hosts
    that pyctr only knows as a route's next hop have nothing inside."""

    def __init__(self, network: str, driver: str, subnet: str, scope: str):
        self.network = network
        self.driver = driver
        self.subnet = subnet
        self.scope = scope  # "local" (one host) or "global" (from the datastore)
        self.hosts: list[Host] = []
        self.links: list[Link] = []

    def host(self, name: str) -> Host:
        """The host called `name`, added if the picture has none yet."""
        for host in self.hosts:
            if host.name == name:
                return host
        host = Host(name)
        self.hosts.append(host)
        return host


def output_format(path: str) -> str:
    """svg or png, from the file's suffix; anything else is refused."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise PyctrError(f"cannot draw {path!r}: the file must end in .svg or .png")
    return FORMATS[suffix]


def cmd_graph(args) -> int:
    from pyctr.network import graph_render, graph_sources, networks

    fmt = output_format(args.output)
    net = networks.load(args.name)
    picture = graph_sources.cluster(net) if net.datastore else graph_sources.local_host(net)
    _write(args.output, graph_render.draw(picture, fmt))
    return 0


def _write(path: str, data: bytes) -> None:
    """Write the file whole or not at all: a temporary file beside it, renamed over it."""
    target = Path(path)
    if not target.parent.is_dir():
        raise PyctrError(f"cannot write {path}: no folder {str(target.parent)!r}")
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(temporary, 0o644)  # mkstemp's 0600: a picture is for anyone to look at
        os.replace(temporary, target)
    except BaseException:
        os.unlink(temporary)
        raise
