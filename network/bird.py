"""BIRD 2, the BGP speaker of a cluster node (as calico/node runs it): its configuration, and
what its control socket says through `birdc`.

One BIRD per node, in the node's network namespace, with its files under $PYCTR_STATE/node/.
Its configuration is Calico's node-to-node mesh:

  - a BGP session with every other node of the datastore, named `mesh_` + the node's name
    (non-alphanumerics as `_`), on the shared underlay (`direct`: the peer's address is the
    next hop, no recursive lookup);
  - the node's own blocks (from etcd) exported as static blackhole routes, with itself as the
    next hop; the kernel keeps pyctr's own blackholes for them, so these never go there;
  - what the mesh learns goes into the kernel's main table (`proto bird`), and out of it again
    when the session drops (BIRD's kernel protocol, without `persist`).

The timers are short, for a LAN: the hold time is the node's (--bgp-hold-time), and a session
that failed is tried again within seconds, not BIRD's default minute.
"""

import re

from pyctr.runtime import hosttools
from pyctr.runtime.errors import PyctrError

MESH_PREFIX = "mesh_"
DEFAULT_ASN = 64512  # Calico's default AS, private (RFC 6996)
DEFAULT_HOLD_TIME = 90  # RFC 4271's suggestion; BGP allows 0 (none) or at least 3
BIRDC_TIMEOUT = 5.0

CONFIG = """\
# pyctr node {name}: rendered by the node agent from the datastore; it runs `birdc configure`
# when nodes or blocks change.
log stderr all;
router id {address};

protocol device {{
}}

# What the mesh learns goes into the kernel (proto bird). This node's own blocks do not: pyctr's
# blackholes stand for them.
protocol kernel {{
    ipv4 {{
        import none;
        export where source = RTS_BGP;
    }};
}}
{static}
template bgp mesh {{
    debug {{ states }};
    local {address} as {asn};
    direct;
    hold time {hold_time};
    connect delay time 1;
    connect retry time 2;
    error wait time 1, 4;
    ipv4 {{
        import all;
        export where source = RTS_STATIC;
        next hop self;
    }};
}}
{peers}"""

STATIC = """
# This node's blocks, which the mesh learns from it.
protocol static blocks {{
    ipv4;
{routes}}}
"""

PEER = """
protocol bgp {protocol} from mesh {{
    description "pyctr node {name}";
    neighbor {address} as {asn};
}}
"""


def protocol_name(node: str) -> str:
    """BIRD's name of the session with `node`."""
    return MESH_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", node)


def render(name: str, address: str, asn: int, hold_time: int, peers: dict[str, dict],
           blocks: list[str]) -> str:
    """bird.conf of node `name`: `peers` are the other nodes' documents by name ({"address",
    "asn"}), `blocks` the CIDRs this node holds (none for a gateway)."""
    static = ""
    if blocks:
        static = STATIC.format(routes="".join(f"    route {block} blackhole;\n" for block in blocks))
    sessions = "".join(PEER.format(protocol=protocol_name(peer), name=peer, address=doc["address"],
                                   asn=doc.get("asn", DEFAULT_ASN))
                       for peer, doc in sorted(peers.items()))
    return CONFIG.format(name=name, address=address, asn=asn, hold_time=hold_time, static=static,
                         peers=sessions)


def birdc(control_socket: str, *command: str, timeout: float = BIRDC_TIMEOUT) -> str:
    """A birdc command's output (its banner line left out); a PyctrError when BIRD does not
    answer on `control_socket` or refuses the command."""
    import subprocess  # here: the CLI's parser imports this module for its defaults

    argv = [hosttools.tool("birdc"), "-s", str(control_socket), *command]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise PyctrError(f"birdc -s {control_socket}: no answer in {timeout:g} s") from None
    lines = result.stdout.splitlines()
    if lines and lines[0].startswith("BIRD ") and lines[0].endswith(" ready."):
        lines = lines[1:]
    if result.returncode != 0:
        message = (result.stderr.strip() or "\n".join(lines).strip() or "failed").splitlines()[0]
        raise PyctrError(f"birdc -s {control_socket} {' '.join(command)}: {message}")
    return "\n".join(lines)


def configure(control_socket: str) -> None:
    """`birdc configure`: BIRD reads its configuration file again (a bad one is refused, and
    the running configuration stays)."""
    output = birdc(control_socket, "configure")
    if "Reconfigured" not in output and "Reconfiguration in progress" not in output:
        message = next((line.strip() for line in output.splitlines() if line.strip()), "no answer")
        raise PyctrError(f"birdc configure: {message}")


def sessions(control_socket: str) -> list[dict]:
    """The BGP sessions of the BIRD on `control_socket`, from `show protocols all`: each
    {"name": the protocol's name (mesh_NODE), "peer": the neighbor's address, "state": the BGP
    state (Established, Active, Connect, OpenSent, OpenConfirm, Idle, or Down when the
    protocol is not running), "info": the rest of BIRD's info column (e.g. the last error)}."""
    return parse_protocols(birdc(control_socket, "show", "protocols", "all"))


_PROTOCOL_LINE = re.compile(r"^(?P<name>\S+)\s+(?P<proto>\S+)\s+(?P<table>\S+)\s+(?P<state>\S+)\s+"
                            r"(?P<since>\S+)(?:\s+(?P<info>.*))?$")


def parse_protocols(text: str) -> list[dict]:
    """The BGP protocols of `show protocols all` (see sessions())."""
    found = []
    current = None
    for line in text.splitlines():
        if not line.strip() or line.startswith("Name "):
            continue
        if not line[0].isspace():  # a protocol's summary line; its details are indented
            match = _PROTOCOL_LINE.match(line.rstrip())
            current = None
            if match and match["proto"] == "BGP":
                current = _session(match["name"], match["state"], (match["info"] or "").strip())
                found.append(current)
            continue
        key, _, value = line.strip().partition(":")
        if current is not None and key == "Neighbor address":
            current["peer"] = value.strip()
    return found


def _session(name: str, protocol_state: str, info: str) -> dict:
    # The info column of a BGP protocol starts with its BGP state, e.g. "Established" or
    # "Active        Socket: Connection refused"; a disabled or stopped one says nothing.
    words = info.split(None, 1)
    state = words[0] if words else protocol_state.capitalize()
    if protocol_state == "down" and not words:
        state = "Down"
    return {"name": name, "peer": "", "state": state, "info": words[1].strip() if len(words) > 1 else ""}
