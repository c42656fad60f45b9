"""Network policies across a cluster: what a network with a datastore (a cluster network) keeps
in etcd, and the node agent's part, which keeps every node's tables current.

    /pyctr/policies/NET/NAME   a policy, one key each: `network policy apply` on any node writes
                               it (policystore), so every node enforces the same policies
    /pyctr/endpoints/NET/IP    {"container", "node", "labels"}: written in the transaction that
                               claims the address (clusteripam), deleted with its release

A node's table (policyrules.py) holds its own endpoints, which get chains, and every other
node's, which only join the sets: a selector on node1 matches containers on node2 and node3.

Each node agent reads both prefixes every poll (Follower.refresh(), two range requests) and
rebuilds a network's table, in one `nft -f` as always, when what it read of that network
changed, and from that very read, which is what the next poll compares with: a table built from
a read of its own could catch a change (a policy removed) that is undone by the next poll (the
same policy applied again, the same content to the second), and no poll would see a difference
to rebuild it. A change made anywhere thus reaches every node within a poll period plus one
rebuild; a connection already open keeps going (its packets are `established`), as in
Kubernetes. The node that made the change rebuilds its own table at once, before it returns.

A poll compares each key's etcd revision as well as its document. The same document can come
back: `policy rm` on this node (its table loses the policy at once), and the same policy
applied on another node within the same second (the same creationTimestamp) before this node's
next poll. By documents alone the agent would see no change and leave this node without the
policy; the key's new revision makes it rebuild.
"""

import json
from collections import namedtuple

from pyctr.network import datastore, networks, policyspec
from pyctr.runtime import explain


class Read(namedtuple("Read", "policies endpoints")):
    """What one poll of the node agent read of the datastore: every network's policies and
    endpoints, each by key. (A named tuple: see driver.PortMapping.)"""
    __slots__ = ()


def _store(net: networks.Network) -> datastore.Datastore:
    return datastore.Datastore(net.datastore)


def load_policies(net: networks.Network, read: Read | None = None) -> dict[str, dict]:
    """The network's policies in etcd (as `read` found them, or read now), each checked again as
    `policy apply` checks a file: they become nft text run as root on every node, and whatever
    wrote etcd (an older pyctr, a person with etcdctl) must not put its own lines in that text. A
    bad one refuses the whole load, so the tables stay as they were rather than lose the rules it
    meant."""
    prefix = datastore.policies_prefix(net.name)
    documents = _documents(net, prefix, None if read is None else read.policies)
    policies = {}
    for key, doc in documents.items():
        name = key[len(prefix):]
        try:
            policyspec.check_name(name)
            checked = policyspec.check(doc)
            if checked["metadata"]["name"] != name:
                raise policyspec.PolicyError(f"metadata.name: {checked['metadata']['name']!r}, not the key's")
        except policyspec.PolicyError as e:
            raise datastore.not_valid(key, "policy", e) from None
        created = doc["metadata"].get("creationTimestamp")
        if isinstance(created, str):  # apply's stamp, which check() leaves out
            checked["metadata"]["creationTimestamp"] = created
        policies[name] = checked
    return policies


def save_policies(net: networks.Network, policies: dict[str, dict], before: dict[str, dict]) -> None:
    """Write what changed from `before` to `policies`, in one transaction. Only those keys: a
    policy another node applied meanwhile stays."""
    prefix = datastore.policies_prefix(net.name)
    puts = {f"{prefix}{name}": p for name, p in policies.items() if before.get(name) != p}
    deletes = [f"{prefix}{name}" for name in before if name not in policies]
    endpoint = f"--endpoints=http://{net.datastore.removeprefix('etcd://')}"
    for key, value in puts.items():
        explain.step("etcdctl", endpoint, "put", key, json.dumps(value, sort_keys=True))
    for key in deletes:
        explain.step("etcdctl", endpoint, "del", key)
    _store(net).put_and_delete(puts, deletes)


def other_nodes_endpoints(net: networks.Network, read: Read | None = None) -> list[tuple[str, str, dict]]:
    """(address, container id, labels) of the network's endpoints on the other nodes (as `read`
    found them, or read now). The addresses go into nft sets: each is checked to be one (as the
    policies are, load_policies)."""
    import ipaddress

    prefix = datastore.endpoints_prefix(net.name)
    documents = _documents(net, prefix, None if read is None else read.endpoints)
    this_node = datastore.node_name()
    found = []
    for key, doc in documents.items():
        try:
            if doc.get("node") == this_node:
                continue
            labels = doc.get("labels") or {}
            address = str(ipaddress.IPv4Address(key[len(prefix):]))
            if not all(isinstance(v, str) for v in (*labels.keys(), *labels.values())):
                raise ValueError("labels must map strings to strings")
        except (ValueError, AttributeError) as e:
            raise datastore.not_valid(key, "endpoint", e) from None
        found.append((address, doc.get("container", ""), dict(labels)))
    return found


class Follower:
    """The node agent's part: rebuild a cluster network's table when its policies or endpoints
    in etcd change. One refresh() per poll of the agent."""

    def __init__(self, store: datastore.Datastore, log):
        self.store = store
        self.log = log
        # network -> (what its table was last built from, whether it had a policy or --default-deny)
        self.seen: dict[str, tuple[str, bool]] = {}

    def refresh(self) -> None:
        from pyctr.network import policyrules

        cluster = [net for net in networks.all_networks()
                   if net.datastore and net.driver in policyrules.SUPPORTED_DRIVERS]
        self.seen = {name: seen for name, seen in self.seen.items() if name in {n.name for n in cluster}}
        if not cluster:
            return
        endpoints = self.store.get_prefix_with_revisions(datastore.all_endpoints_prefix())
        policies = self.store.get_prefix_with_revisions(datastore.all_policies_prefix())
        read = Read(endpoints={key: doc for key, (doc, _) in endpoints.items()},
                    policies={key: doc for key, (doc, _) in policies.items()})
        for net in cluster:
            ours = _under(read.policies, datastore.policies_prefix(net.name))
            enforced = bool(getattr(net, "default_deny", False) or ours)
            # Revisions too, not only documents: see the module's docstring.
            state = json.dumps([enforced, _under(policies, datastore.policies_prefix(net.name)),
                                _under(endpoints, datastore.endpoints_prefix(net.name))], sort_keys=True)
            previous = self.seen.get(net.name)
            if previous is not None and previous[0] == state:
                continue
            # A network without policies has no table: its endpoints' changes cost nothing. The
            # first look at a network (the agent started) rebuilds it, whatever happened meanwhile.
            if enforced or previous is None or previous[1]:
                self._rebuild(net, read)
            self.seen[net.name] = (state, enforced)

    def _rebuild(self, net: networks.Network, read: Read) -> None:
        from pyctr.network import policyrules

        # Under the definitions' lock: a `network rm` running now either removed the network
        # (skip it) or waits until its table is built (and removes it then).
        with networks.definitions_lock():
            if not networks.exists(net.name):
                return
            policyrules.sync(networks.load(net.name), read=read)
        self.log(f"network {net.name}: policy table rebuilt from the datastore")


def _documents(net: networks.Network, prefix: str, already_read: dict[str, dict] | None) -> dict[str, dict]:
    """The documents under `prefix`: those a poll already read, or read from etcd now."""
    return _store(net).get_prefix(prefix) if already_read is None else _under(already_read, prefix)


def _under(by_key: dict, prefix: str) -> dict:
    return {key: value for key, value in by_key.items() if key.startswith(prefix)}
