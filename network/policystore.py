"""A network's policies: on one host, $PYCTR_ROOT/networks/NAME/policies.json, written
atomically, changed only under the network's policy lock (which also covers its nftables table).

    {"policies": {"NAME": {apiVersion, kind, metadata, spec}, ...}}

The file exists only while the network has a policy, so that a start on a network without
policies costs one stat (enforced()).

A cluster network (one with a datastore) keeps its policies in etcd instead, one key each
(clusterpolicy.py), so that a policy applied on any node holds on every node; the lock stays
this node's (its table), and a save writes only the policies that changed, in one transaction.
There, what enforced() reads is a local mark, TABLE_MARK, that the node has a table: a start
still costs no etcd request beyond its address claim. The node agent builds the table (and the
mark) within a poll of a policy's arrival; a container started in between gets its chain when
the agent sees its endpoint, at the next poll.
"""

from pyctr.network import networks
from pyctr.runtime import jsonstore

FILE = "policies.json"
TABLE_MARK = "policy-table"


def enforced(net: networks.Network) -> bool:
    """Whether the network has a policy table to keep current: a policy, or --default-deny."""
    if getattr(net, "default_deny", False):
        return True
    return (net.dir / (TABLE_MARK if net.datastore else FILE)).exists()


def mark_table(net: networks.Network, present: bool) -> None:
    """Note whether this node now has a table for a cluster network (see enforced())."""
    if net.datastore:
        mark = net.dir / TABLE_MARK
        if present:
            mark.touch()
        else:
            mark.unlink(missing_ok=True)


def locked(net: networks.Network) -> jsonstore.locked:
    """Held while the policies or the network's nftables table change."""
    return jsonstore.locked(net.dir / "policy.lock")


def load(net: networks.Network, read=None) -> dict[str, dict]:
    """The policies by name (call it under locked(net) when changing them). `read`: for a
    cluster network, what the node agent read of etcd (clusterpolicy.Read), else read now."""
    if net.datastore:
        return _cluster().load_policies(net, read)
    doc = jsonstore.read_json(net.dir / FILE, {}) or {}
    return dict(doc.get("policies") or {})


def save(net: networks.Network, policies: dict[str, dict], before: dict[str, dict]) -> None:
    """Save `policies`, which were `before` when load() read them."""
    if net.datastore:
        return _cluster().save_policies(net, policies, before)
    path = net.dir / FILE
    if policies:
        jsonstore.write_json(path, {"policies": dict(sorted(policies.items()))})
    else:
        path.unlink(missing_ok=True)


def _cluster():
    # Imported only for cluster networks: it brings the etcd client.
    from pyctr.network import clusterpolicy

    return clusterpolicy
