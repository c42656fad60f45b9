"""CLI commands for networks and nodes: `pyctr network create|ls|inspect|rm|graph|route|policy`,
`pyctr node start|stop|rm|ls`.

Only argparse lives here (the CLI imports it at start-up); the handlers are in
pyctr.network.handlers, pyctr.network.graph and pyctr.network.node, and are imported when their
command runs.
"""

import argparse


def _handler(name: str) -> str:
    return f"pyctr.network.handlers:{name}"


def register(sub, command) -> None:
    """Add the network and node subcommands. `command(name, "module:function", help)` returns a subparser."""
    p = command("network", "", "manage networks")
    nsub = p.add_subparsers(dest="network_command", metavar="COMMAND", required=True)

    c = nsub.add_parser("create", help="create a network")
    c.add_argument("-d", "--driver", default="bridge", help="bridge (default), routed, or a plug-in")
    c.add_argument("--subnet", metavar="CIDR",
                   help="e.g. 172.19.35.0/24 (routed: this node's block; with --datastore: the cluster's pool)")
    c.add_argument("--gateway", metavar="IP", help="bridge: the bridge's address (default: first host)")
    c.add_argument("--bridge", metavar="IFNAME", help="bridge: the interface name (default: br-ID)")
    c.add_argument("--masquerade", action=argparse.BooleanOptionalAction, default=None,
                   help="NAT traffic leaving the network (default: on for bridge, off for routed)")
    c.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=None,
                   help="bridge: let in only replies and published ports, as Docker does (default: on); "
                        "--no-isolate lets other networks and the LAN reach every port")
    c.add_argument("--cluster-cidr", metavar="CIDR",
                   help="routed: traffic to this range keeps its source address (no NAT)")
    c.add_argument("--datastore", metavar="etcd://HOST:PORT",
                   help="routed: a cluster-wide pool in this etcd (default: $PYCTR_DATASTORE)")
    c.add_argument("--block-size", type=int, metavar="N",
                   help="routed with a datastore: nodes take the pool in blocks of /N (default: 26)")
    c.add_argument("--default-deny", action="store_true",
                   help="isolate every container both ways until a network policy allows traffic")
    c.add_argument("name", metavar="NAME")
    c.set_defaults(handler=_handler("cmd_create"))

    c = nsub.add_parser("ls", help="list networks")
    c.add_argument("-q", "--quiet", action="store_true", help="only names")
    c.set_defaults(handler=_handler("cmd_ls"))

    c = nsub.add_parser("inspect", help="show networks as JSON")
    c.add_argument("names", nargs="+", metavar="NAME")
    c.set_defaults(handler=_handler("cmd_inspect"))

    c = nsub.add_parser("rm", help="remove networks (refused while containers use them)")
    c.add_argument("names", nargs="+", metavar="NAME")
    c.set_defaults(handler=_handler("cmd_rm"))

    c = nsub.add_parser("graph", help="draw a network: hosts, bridges or blocks, containers, routes, "
                                      "BGP sessions (graphviz)")
    c.add_argument("name", metavar="NAME")
    c.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="FILE.svg or FILE.png (the suffix picks the format)")
    c.set_defaults(handler="pyctr.network.graph:cmd_graph")

    r = nsub.add_parser("route", help="routes to other nodes' blocks (routed networks)")
    rsub = r.add_subparsers(dest="route_command", metavar="COMMAND", required=True)
    for verb, help_text in (("add", "route CIDR via another node"), ("rm", "remove a route")):
        c = rsub.add_parser(verb, help=help_text)
        c.add_argument("name", metavar="NAME")
        c.add_argument("cidr", metavar="CIDR", help="the other node's block")
        c.add_argument("via_keyword", choices=["via"], metavar="via")
        c.add_argument("node_ip", metavar="NODE_IP", help="the other node's address")
        c.set_defaults(handler=_handler(f"cmd_route_{verb}"))
    c = rsub.add_parser("ls", help="list a network's routes")
    c.add_argument("name", metavar="NAME")
    c.set_defaults(handler=_handler("cmd_route_ls"))

    r = nsub.add_parser("policy", help="network policies (Kubernetes' NetworkPolicy, in YAML)")
    psub = r.add_subparsers(dest="policy_command", metavar="COMMAND", required=True)
    c = psub.add_parser("apply", help="create or replace a policy on a network")
    c.add_argument("name", metavar="NETWORK")
    c.add_argument("-f", "--file", required=True, metavar="POLICY.yaml", help="the policy (- for stdin)")
    c.set_defaults(handler=_handler("cmd_policy_apply"))
    c = psub.add_parser("ls", help="list a network's policies")
    c.add_argument("-q", "--quiet", action="store_true", help="only names")
    c.add_argument("name", metavar="NETWORK")
    c.set_defaults(handler=_handler("cmd_policy_ls"))
    c = psub.add_parser("inspect", help="show policies as JSON")
    c.add_argument("name", metavar="NETWORK")
    c.add_argument("policies", nargs="+", metavar="POLICY")
    c.set_defaults(handler=_handler("cmd_policy_inspect"))
    c = psub.add_parser("rm", help="remove policies")
    c.add_argument("name", metavar="NETWORK")
    c.add_argument("policies", nargs="+", metavar="POLICY")
    c.set_defaults(handler=_handler("cmd_policy_rm"))

    _register_node(command)


def _register_node(command) -> None:
    from pyctr.network import bird  # for its defaults; it imports nothing heavy

    handler = "pyctr.network.node:cmd_{}".format
    p = command("node", "", "this host as a node of a cluster network (BGP, with BIRD)")
    nsub = p.add_subparsers(dest="node_command", metavar="COMMAND", required=True)
    datastore_help = "the cluster's etcd (default: $PYCTR_DATASTORE)"

    c = nsub.add_parser("start", help="register this host in the datastore, start BIRD and the node agent")
    c.add_argument("--datastore", metavar="etcd://HOST:PORT", help=datastore_help)
    c.add_argument("--name", required=True, metavar="NODE", help="the node's name in the datastore")
    c.add_argument("--address", required=True, metavar="IP",
                   help="this host's address on the underlay, where BGP speaks")
    c.add_argument("--asn", type=int, default=bird.DEFAULT_ASN, metavar="N",
                   help=f"the node's AS number (default: {bird.DEFAULT_ASN}, one iBGP mesh)")
    c.add_argument("--bgp-hold-time", type=int, default=bird.DEFAULT_HOLD_TIME, metavar="S",
                   help="seconds without a word from a peer before its routes go "
                        f"(default: {bird.DEFAULT_HOLD_TIME})")
    c.add_argument("--lease-ttl", type=int, default=10, metavar="S",
                   help="seconds the node stays registered after its agent stops renewing (default: 10)")
    c.add_argument("--gateway", action="store_true",
                   help="a node without containers that learns every block (the head node)")
    c.add_argument("--masquerade", metavar="CIDR", help="gateway: NAT traffic from CIDR that leaves through --out")
    c.add_argument("--out", metavar="IFACE", help="gateway: the interface to the outside")
    c.set_defaults(handler=handler("start"))

    c = nsub.add_parser("stop", help="stop this host's node: BIRD and its agent; it leaves the mesh")
    c.set_defaults(handler=handler("stop"))

    c = nsub.add_parser("rm", help="forget a stopped node: free its blocks and addresses")
    c.add_argument("--datastore", metavar="etcd://HOST:PORT", help=datastore_help)
    c.add_argument("names", nargs="+", metavar="NAME")
    c.set_defaults(handler=handler("rm"))

    c = nsub.add_parser("ls", help="list the cluster's nodes, their blocks and this host's BGP sessions")
    c.add_argument("--datastore", metavar="etcd://HOST:PORT",
                   help="the cluster's etcd (default: $PYCTR_DATASTORE, else this host's node's)")
    c.add_argument("-q", "--quiet", action="store_true", help="only names")
    c.set_defaults(handler=handler("ls"))
