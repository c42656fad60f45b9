"""A network's policies: on one host, $PYCTR_ROOT/networks/NAME/policies.json, written
atomically, changed only under the network's policy lock (which also covers its nftables table).

    {"policies": {"NAME": {apiVersion, kind, metadata, spec}, ...}}

The file exists only while the network has a policy, so that a start on a network without
policies costs one stat (enforced()).

A cluster network (one with a datastore) keeps its policies in etcd instead, one key each
(clusterpolicy.py), so that a policy applied on any node holds on every node; the lock stays
this node's (its table), and a save writes only the policies that changed, in one transaction.
A start on a cluster network costs one etcd read more (enforced()).
"""

from pyctr.network import networks
from pyctr.runtime import jsonstore

FILE = "policies.json"


def enforced(net: networks.Network) -> bool:
    """Whether the network has a policy table to keep current: a policy, or --default-deny."""
    if getattr(net, "default_deny", False):
        return True
    if net.datastore:
        return _cluster().has_policies(net)
    return (net.dir / FILE).exists()


def locked(net: networks.Network) -> jsonstore.locked:
    """Held while the policies or the network's nftables table change."""
    return jsonstore.locked(net.dir / "policy.lock")


def load(net: networks.Network) -> dict[str, dict]:
    """The policies by name (call it under locked(net) when changing them)."""
    if net.datastore:
        return _cluster().load_policies(net)
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
