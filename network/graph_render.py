"""A network's picture drawn by graphviz, in the walk-through's way: each host a box with its
containers on top (name and eth0 address), their veths below them, then the bridge (with its
gateway address) or the blocks the host routes, and the host itself at the bottom with its
addresses and routes. Lines between hosts are BGP sessions (dashed while not Established) and
routes to other nodes' blocks; a gateway node leads to the outside through its masquerade."""

import ipaddress

from pyctr.network.graph import Host, Picture
from pyctr.runtime.errors import PyctrError

FONT = "Helvetica"
GATEWAY_FILL = "#e8e8e8"
BGP_COLOR = "#1f5fbf"


def draw(picture: Picture, fmt: str) -> bytes:
    """The picture as `fmt` (svg or png), drawn by graphviz's dot."""
    import graphviz  # here: only this command needs it

    source = _source(picture, graphviz)
    try:
        return source.pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        raise PyctrError("graphviz's dot is not installed: apt-get install graphviz "
                         "(scripts/setup.sh installs it)") from None
    except graphviz.CalledProcessError as e:
        detail = " ".join((e.stderr or b"").decode(errors="replace").split())[:200]
        raise PyctrError(f"dot could not draw network {picture.network}: {detail or e}") from None


def _source(picture: Picture, graphviz) -> "graphviz.Graph":
    def text(*lines: str) -> str:
        """A centred multi-line label; graphviz.escape keeps a backslash in the data literal."""
        return "\\n".join(graphviz.escape(line) for line in lines if line)

    def left(*lines: str) -> str:
        """A left-justified multi-line label (\\l ends each line)."""
        return "".join(graphviz.escape(line) + "\\l" for line in lines)

    title = f"network {picture.network}: {picture.driver}, {picture.subnet}"
    if picture.scope == "global":
        title += " (the cluster, from its datastore)"
    graph = graphviz.Graph(name=picture.network)
    graph.attr(label=text(title), labelloc="t", fontname=FONT, fontsize="14", nodesep="0.35",
               ranksep="0.45")
    graph.attr("node", fontname=FONT, fontsize="11")
    graph.attr("edge", fontname=FONT, fontsize="10")

    anchors = {host.name: f"host{i}" for i, host in enumerate(picture.hosts)}
    for i, host in enumerate(picture.hosts):
        anchor = anchors[host.name]
        if not (host.containers or host.bridges or host.routes or host.gateway or host.asn):
            # Known only as a next hop: an address and the blocks behind it.
            graph.node(anchor, text(host.name, *[f"via it: {b}" for b in host.blocks]), shape="ellipse")
            continue
        with graph.subgraph(name=f"cluster_{i}") as box:
            box.attr(label=text(host.name + (" (gateway)" if host.gateway else "")), style="rounded",
                     fontsize="13")
            _host_inside(box, host, anchor, text, left)
        if host.gateway and host.masquerade:
            outside = f"outside{i}"
            graph.node(outside, "the outside", shape="plaintext")
            graph.edge(anchor, outside, label=text(f"out {host.out}" if host.out else "NAT"))

    for link in picture.links:
        attributes = {"label": text(link.label), "constraint": "false"}
        if link.kind == "bgp":
            attributes.update(color=BGP_COLOR, fontcolor=BGP_COLOR)
        if not link.up:
            attributes["style"] = "dashed"
        if link.kind == "route":
            attributes["constraint"] = "true"  # the next hop below the host, as in the figures
        graph.edge(anchors[link.a], anchors[link.b], **attributes)
    return graph


def _host_inside(box, host: Host, anchor: str, text, left) -> None:
    """Containers, veths, bridges or blocks, the host itself, and its routes."""
    lines = [*host.interfaces]
    if host.asn is not None:
        lines.append(f"AS {host.asn}")
    if host.masquerade:
        lines.append(f"masquerade {host.masquerade}" + (f" out {host.out}" if host.out else ""))
    style = {"style": "bold,filled", "fillcolor": GATEWAY_FILL} if host.gateway else {"style": "bold"}
    box.node(anchor, text(host.name, *lines), shape="box", **style)

    # What the containers attach to: the bridge, else the block that holds their address.
    parents = {}
    for j, bridge in enumerate(host.bridges):
        parents[f"{anchor}_br{j}"] = (None, bridge)
        box.node(f"{anchor}_br{j}", text(bridge.name, bridge.address or ""), shape="box", style="filled",
                 fillcolor="#fff6d5")
        box.edge(f"{anchor}_br{j}", anchor)
    for j, block in enumerate(host.blocks):
        parents[f"{anchor}_bl{j}"] = (block, None)
        box.node(f"{anchor}_bl{j}", text(f"block {block}", "(blackhole for the rest)"), shape="box",
                 style="dashed")
        box.edge(f"{anchor}_bl{j}", anchor)

    for j, container in enumerate(host.containers):
        node = f"{anchor}_c{j}"
        box.node(node, text(container.name, f"eth0 {container.address}"), shape="box", style="rounded")
        parent = _parent_of(container.address, parents) or anchor
        if container.veth:
            box.node(f"{node}_veth", text(container.veth), shape="ellipse", fontsize="9", height="0.3")
            box.edge(node, f"{node}_veth")
            box.edge(f"{node}_veth", parent)
        else:
            box.edge(node, parent, style="dashed")

    if host.routes:
        box.node(f"{anchor}_routes", left("routes:", *host.routes), shape="note", fontsize="9")
        box.edge(anchor, f"{anchor}_routes", style="dotted")


def _parent_of(address: str, parents: dict) -> str | None:
    """The bridge a container hangs on (a host has at most one per picture), else its block."""
    ip = ipaddress.IPv4Interface(address).ip
    for node, (block, bridge) in parents.items():
        if bridge is not None or ip in ipaddress.IPv4Network(block):
            return node
    return None
