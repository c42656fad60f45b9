"""Network policies enforced with nftables: one table per network, `table inet pyctr-policy-NET`,
rebuilt whole from the network's policies and endpoints in ONE `nft -f` transaction at every
change (a policy applied or removed, a container connected or disconnected). The kernel swaps
the old table for the new one atomically: no packet ever sees half of a change.

    set peers-HASH        the addresses of the endpoints a peer podSelector matches (one set per
                          distinct selector, however many rules use it: a rule stays O(1))
    map egress-endpoints  INTERFACE . ADDRESS : jump egress-CONTAINER, for each endpoint isolated
    map ingress-endpoints for egress (resp. ingress); an endpoint that no policy selects for a
                          direction has no entry, and stays open that way
    chain egress-CID      jump policy-NAME-egress for each policy that selects the container,
    chain ingress-CID     then count and drop: what is allowed is the union of the policies' rules
    chain policy-NAME-…   one rule per peer and port: `ip saddr @peers-HASH tcp dport 5432 accept`
    base chains           on forward, input and output: established and related packets (replies)
                          accept, then the endpoint's chain through the map (vmap)

Egress and ingress are checked in two base chains on the same hook (egress first): `accept` in
a container's egress chain ends that base chain only, so a packet between two containers must
be allowed by the sender's egress rules and by the receiver's ingress rules, as Kubernetes says.
The chain is entered by the interface and the address together: a routed container's host veth,
or the bridge of a bridge network (its switched traffic reaches the inet hooks through
br_netfilter, switched on for that bridge only: see README).
"""

import copy
import hashlib
import json
import os

from pyctr.network import endpoints as endpoint_list
from pyctr.network import networks, nft, policyspec, policystore
from pyctr.runtime.errors import PyctrError

FAMILY = "inet"
DIRECTIONS = {"Ingress": ("ingress", "from", "saddr"), "Egress": ("egress", "to", "daddr")}
# Base chains: (name, hook, priority, direction). Egress before ingress on forward.
BASE_CHAINS = [("forward-egress", "forward", "filter + 10", "Egress"),
               ("forward-ingress", "forward", "filter + 20", "Ingress"),
               ("input-egress", "input", "filter + 10", "Egress"),
               ("output-ingress", "output", "filter + 20", "Ingress")]
SUPPORTED_DRIVERS = ("bridge", "routed")


def table_name(net: networks.Network) -> str:
    return f"pyctr-policy-{net.name}"


# There when br_netfilter is in the kernel (built in, or its module loaded), for this netns.
BRIDGE_NETFILTER_SYSCTLS = "/proc/sys/net/bridge"


def check_network(net: networks.Network) -> None:
    if net.driver not in SUPPORTED_DRIVERS:
        raise PyctrError(f"network {net.name} uses the {net.driver} driver: policies need a bridge "
                         "or routed network")


def sync(net: networks.Network, joining: str = "", leaving: str = "", change=None, read=None) -> None:
    """Make the network's table what its policies and endpoints say, in one transaction.
    `change(policies)`, given the policies by name, may change them first (under the lock);
    they are saved once the kernel has taken the new table. `joining`, `leaving`: see
    endpoints.endpoints(). `read`: what the node agent read of etcd (clusterpolicy.Read), for
    a cluster network's table built from that and not from a read of its own."""
    with policystore.locked(net):
        policies = policystore.load(net, read)
        before = copy.deepcopy(policies)
        if change is not None:
            change(policies)
        members = endpoint_list.endpoints(net, joining, leaving, read)
        lines = table_script(net, policies, members)
        if net.driver == "bridge" and len(lines) > 2:
            _bridge_through_netfilter(net)
        nft.transaction(lines)
        policystore.mark_table(net, len(lines) > 2)
        if change is not None:
            try:
                policystore.save(net, policies, before)
            except BaseException:  # etcd refused: the table goes back to what is saved
                restored = table_script(net, before, members)
                nft.transaction(restored)
                policystore.mark_table(net, len(restored) > 2)
                raise


def remove(net: networks.Network) -> None:
    """The network goes: its table goes (nothing happens if there is none)."""
    with policystore.locked(net):
        nft.transaction(_drop_table(net))
        policystore.mark_table(net, False)


def table_script(net: networks.Network, policies: dict[str, dict], members: list) -> list[str]:
    """The nft lines that replace the network's table; only deleting it when the network has
    neither policies nor --default-deny."""
    lines = _drop_table(net)
    default_deny = bool(getattr(net, "default_deny", False))
    if not policies and not default_deny:
        return lines
    sets: dict[str, tuple[str, dict]] = {}  # name -> (selector text, selector)
    body = []
    for name, policy in sorted(policies.items()):
        spec = policy["spec"]
        for kind in spec["policyTypes"]:
            direction, peers_key, field = DIRECTIONS[kind]
            rules = []
            for rule in spec.get(direction, []):
                rules += _rule_lines(rule, peers_key, field, sets)
            body.append(_chain(f"policy-{name}-{direction}", rules,
                               f"policy {name} {direction}"))
    maps = {"Ingress": [], "Egress": []}
    for member in members:
        if not member.interface:
            continue  # on another node: only its address matters here (in the sets)
        selecting = [(name, p["spec"]) for name, p in sorted(policies.items())
                     if policyspec.matches(p["spec"]["podSelector"], member.labels)]
        for kind, (direction, _, _) in DIRECTIONS.items():
            chosen = [name for name, spec in selecting if kind in spec["policyTypes"]]
            if not chosen and not default_deny:
                continue  # not isolated in this direction
            chain = f"{direction}-{member.container_id[:12]}"
            rules = [f"jump policy-{name}-{direction}" for name in chosen] + ["counter drop"]
            body.append(_chain(chain, rules, f"container {member.name or member.container_id[:12]}"))
            maps[kind].append(f'"{member.interface}" . {member.address} : jump {chain}')
    head = []
    for set_name, (text, selector) in sorted(sets.items()):
        addresses = [m.address for m in members if policyspec.matches(selector, m.labels)]
        elements = f" elements = {{ {', '.join(addresses)} }};" if addresses else ""
        head.append(f'  set {set_name} {{ type ipv4_addr; comment "{_comment(text)}";{elements} }}')
    for kind in ("Egress", "Ingress"):
        direction = DIRECTIONS[kind][0]
        elements = f" elements = {{ {', '.join(maps[kind])} }};" if maps[kind] else ""
        head.append(f"  map {direction}-endpoints {{ type ifname . ipv4_addr : verdict;{elements} }}")
    for chain, hook, priority, kind in BASE_CHAINS:
        direction, _, field = DIRECTIONS[kind]
        interface = "iifname" if kind == "Egress" else "oifname"
        address = "ip saddr" if kind == "Egress" else "ip daddr"
        body.append(f"  chain {chain} {{ type filter hook {hook} priority {priority}; policy accept;\n"
                    f"    ct state established,related accept\n"
                    f"    {interface} . {address} vmap @{direction}-endpoints\n  }}")
    lines.append(f"table {FAMILY} {table_name(net)} {{")
    lines += head + body
    lines.append("}")
    return lines


def _drop_table(net: networks.Network) -> list[str]:
    # `add` then `delete`: the delete cannot fail on a missing table (nft 1.0.6 has no `destroy`).
    return [f"add table {FAMILY} {table_name(net)}", f"delete table {FAMILY} {table_name(net)}"]


def _rule_lines(rule: dict, peers_key: str, field: str, sets: dict) -> list[str]:
    """One line per (peer, port) of a rule: Kubernetes' "any peer and any port" as a union."""
    peers = [_peer_match(peer, field, sets) for peer in rule.get(peers_key) or []] or [""]
    ports = [_port_match(port) for port in rule.get("ports") or []] or [""]
    return [" ".join(filter(None, (peer, port, "accept"))) for peer in peers for port in ports]


def _peer_match(peer: dict, field: str, sets: dict) -> str:
    if "podSelector" in peer:
        selector = peer["podSelector"]
        text = policyspec.selector_text(selector)
        digest = hashlib.sha256(json.dumps(selector, sort_keys=True).encode()).hexdigest()[:12]
        sets[f"peers-{digest}"] = (text, selector)
        return f"ip {field} @peers-{digest}"
    block = peer["ipBlock"]
    match = f"ip {field} {block['cidr']}"
    if block.get("except"):
        match += f" ip {field} != {{ {', '.join(block['except'])} }}"
    return match


def _port_match(port: dict) -> str:
    protocol = port["protocol"].lower()
    if "port" not in port:
        return f"meta l4proto {protocol}"
    if "endPort" in port:
        return f"{protocol} dport {port['port']}-{port['endPort']}"
    return f"{protocol} dport {port['port']}"


def _chain(name: str, rules: list[str], comment: str) -> str:
    inner = "".join(f"\n    {rule}" for rule in rules)
    return f'  chain {name} {{\n    comment "{_comment(comment)}"{inner}\n  }}'


def _comment(text: str) -> str:
    # nft keeps at most 128 bytes of a comment; the texts here hold no quote.
    return text.replace('"', "'")[:120]


def _bridge_through_netfilter(net: networks.Network) -> None:
    """Switched IPv4 between the bridge's ports passes the inet hooks (br_netfilter), for this
    bridge only: its own nf_call_iptables, not the netns-wide net.bridge.bridge-nf-call-iptables."""
    from pyctr.network import iproute

    # Without br_netfilter (a module on most distributions' kernels) the bridge's option does
    # nothing, and switched traffic would pass every policy: refuse rather than enforce nothing.
    # pyctr does not load it: loading it sends every bridge of the host through netfilter.
    if not os.path.isdir(BRIDGE_NETFILTER_SYSCTLS):
        raise PyctrError(f"network {net.name}: policies on a bridge network need the kernel's "
                         "br_netfilter (modprobe br_netfilter; it also sends this host's other "
                         "bridges through netfilter, see the README)")
    if iproute.link_exists(net.bridge):  # else the first connect builds it, and syncs again
        iproute.run([["link", "set", net.bridge, "type", "bridge", "nf_call_iptables", "1"]])
