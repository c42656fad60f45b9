"""A network's policies on disk: $PYCTR_ROOT/networks/NAME/policies.json, written atomically,
changed only under the network's policy lock (which also covers its nftables table).

    {"policies": {"NAME": {apiVersion, kind, metadata, spec}, ...}}

The file exists only while the network has a policy, so that a start on a network without
policies costs one stat (enforced()).
"""

from pyctr.network import networks
from pyctr.runtime import jsonstore

FILE = "policies.json"


def enforced(net: networks.Network) -> bool:
    """Whether the network has a policy table to keep current: a policy, or --default-deny."""
    return bool(getattr(net, "default_deny", False)) or (net.dir / FILE).exists()


def locked(net: networks.Network) -> jsonstore.locked:
    """Held while the policies or the network's nftables table change."""
    return jsonstore.locked(net.dir / "policy.lock")


def load(net: networks.Network) -> dict[str, dict]:
    """The policies by name (call it under locked(net) when changing them)."""
    doc = jsonstore.read_json(net.dir / FILE, {}) or {}
    return dict(doc.get("policies") or {})


def save(net: networks.Network, policies: dict[str, dict]) -> None:
    path = net.dir / FILE
    if policies:
        jsonstore.write_json(path, {"policies": dict(sorted(policies.items()))})
    else:
        path.unlink(missing_ok=True)
