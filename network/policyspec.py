"""Network policies as users write them: Kubernetes' NetworkPolicy (networking.k8s.io/v1) in
YAML, read strictly, and the label selectors that pick containers by their labels.

A pyctr network plays the part of a Kubernetes namespace: a policy applies to one network, and
its podSelector and the podSelectors of its peers select the containers of that network.
What is read is checked against the API's fields and rules; anything else (an unknown field,
a selector Kubernetes would refuse, a bad CIDR or port) is one PyctrError naming the field,
and nothing is applied. The policy is kept in the API's shape, with policyTypes defaulted as
the API server does.
"""

import ipaddress
import re

from pyctr.runtime.errors import PyctrError

API_VERSION = "networking.k8s.io/v1"
KIND = "NetworkPolicy"
PROTOCOLS = ("TCP", "UDP", "SCTP")
OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")

# Kubernetes' object names (a DNS-1123 subdomain), shortened so that the nftables chain named
# after a policy stays under nft's 255 characters.
NAME_MAX = 200
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# Label keys and values (Kubernetes' qualified names): [prefix/]name, 63 characters each part.
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_DNS_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

FIELDS = {
    "policy": {"apiVersion", "kind", "metadata", "spec"},
    "metadata": {"name", "namespace", "labels", "annotations", "creationTimestamp"},
    "spec": {"podSelector", "policyTypes", "ingress", "egress"},
    "ingress": {"from", "ports"},
    "egress": {"to", "ports"},
    "peer": {"podSelector", "namespaceSelector", "ipBlock"},
    "ipBlock": {"cidr", "except"},
    "port": {"protocol", "port", "endPort"},
    "selector": {"matchLabels", "matchExpressions"},
    "expression": {"key", "operator", "values"},
}


class PolicyError(PyctrError):
    """A policy that cannot be applied; the message starts with the field's path."""


def parse(text: str) -> dict:
    """The policy in `text` (one YAML document), checked and normalised; PolicyError if bad."""
    import yaml  # only for policies: it costs ~10 ms of imports

    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise PolicyError(f"invalid YAML{where}: {problem}") from None
    if len(documents) != 1:
        raise PolicyError(f"expected one NetworkPolicy document, found {len(documents)}")
    return check(documents[0])


def check(doc) -> dict:
    """`doc` (the parsed YAML) checked, with policyTypes defaulted; PolicyError if bad."""
    _fields(doc, "policy", "")
    if doc.get("apiVersion") != API_VERSION:
        raise PolicyError(f"apiVersion: expected {API_VERSION}, got {doc.get('apiVersion')!r}")
    if doc.get("kind") != KIND:
        raise PolicyError(f"kind: expected {KIND}, got {doc.get('kind')!r}")
    metadata = doc.get("metadata")
    _fields(metadata, "metadata", "metadata")
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        raise PolicyError("metadata.name: required")
    check_name(name)
    for key in ("labels", "annotations"):
        if key in metadata and not _is_string_map(metadata[key]):
            raise PolicyError(f"metadata.{key}: expected a map of strings")
    spec = doc.get("spec")
    _fields(spec, "spec", "spec")
    if "podSelector" not in spec:
        raise PolicyError("spec.podSelector: required ({} selects every container of the network)")
    pod_selector = check_selector(spec["podSelector"], "spec.podSelector")
    ingress = _rules(spec, "ingress", "from")
    egress = _rules(spec, "egress", "to")
    types = _policy_types(spec, egress)
    policy = {"apiVersion": API_VERSION, "kind": KIND,
              "metadata": {"name": name, **{k: metadata[k] for k in ("labels", "annotations") if k in metadata}},
              "spec": {"podSelector": pod_selector, "policyTypes": types}}
    if "ingress" in spec:
        policy["spec"]["ingress"] = ingress
    if "egress" in spec:
        policy["spec"]["egress"] = egress
    return policy


def check_name(name: str) -> None:
    if len(name) > NAME_MAX or not _NAME.match(name):
        raise PolicyError(f"metadata.name: invalid name {name!r}: lower-case letters, digits, '-' and '.', "
                          f"starting and ending with a letter or digit, at most {NAME_MAX} characters")


def _fields(value, kind: str, path: str) -> None:
    """`value` must be a map whose keys are all fields of `kind`."""
    where = path or "the document"
    if not isinstance(value, dict):
        raise PolicyError(f"{where}: expected a map, got {_type_name(value)}")
    for key in value:
        if key not in FIELDS[kind]:
            raise PolicyError(f"{_join(path, key)}: unknown field")


def _rules(spec: dict, direction: str, peers_key: str) -> list[dict]:
    rules = spec.get(direction)
    if rules is None:
        return []
    if not isinstance(rules, list):
        raise PolicyError(f"spec.{direction}: expected a list, got {_type_name(rules)}")
    checked = []
    for i, rule in enumerate(rules):
        path = f"spec.{direction}[{i}]"
        if rule is None:
            rule = {}  # `- {}` written as `-`: a rule that allows everything
        _fields(rule, direction, path)
        out = {}
        if rule.get(peers_key) is not None:
            peers = rule[peers_key]
            if not isinstance(peers, list):
                raise PolicyError(f"{path}.{peers_key}: expected a list, got {_type_name(peers)}")
            out[peers_key] = [_peer(peer, f"{path}.{peers_key}[{j}]") for j, peer in enumerate(peers)]
        if rule.get("ports") is not None:
            ports = rule["ports"]
            if not isinstance(ports, list):
                raise PolicyError(f"{path}.ports: expected a list, got {_type_name(ports)}")
            out["ports"] = [_port(port, f"{path}.ports[{j}]") for j, port in enumerate(ports)]
        checked.append(out)
    return checked


def _peer(peer, path: str) -> dict:
    _fields(peer, "peer", path)
    if "namespaceSelector" in peer:
        raise PolicyError(f"{path}.namespaceSelector: not supported: a policy applies to one pyctr "
                          "network, which is its namespace (use podSelector)")
    given = [key for key in ("podSelector", "ipBlock") if peer.get(key) is not None]
    if len(given) != 1:
        raise PolicyError(f"{path}: give exactly one of podSelector and ipBlock")
    if given == ["podSelector"]:
        return {"podSelector": check_selector(peer["podSelector"], f"{path}.podSelector")}
    return {"ipBlock": _ip_block(peer["ipBlock"], f"{path}.ipBlock")}


def _ip_block(block, path: str) -> dict:
    _fields(block, "ipBlock", path)
    if "cidr" not in block:
        raise PolicyError(f"{path}.cidr: required")
    cidr = _cidr(block["cidr"], f"{path}.cidr")
    out = {"cidr": str(cidr)}
    excepted = block.get("except")
    if excepted is not None:
        if not isinstance(excepted, list):
            raise PolicyError(f"{path}.except: expected a list, got {_type_name(excepted)}")
        out["except"] = []
        for i, text in enumerate(excepted):
            inner = _cidr(text, f"{path}.except[{i}]")
            if not inner.subnet_of(cidr) or inner == cidr:
                raise PolicyError(f"{path}.except[{i}]: {inner} must be inside {cidr}, and smaller")
            out["except"].append(str(inner))
    return out


def _cidr(text, path: str) -> ipaddress.IPv4Network:
    if not isinstance(text, str):
        raise PolicyError(f"{path}: expected a CIDR such as 10.0.0.0/8, got {_type_name(text)}")
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise PolicyError(f"{path}: invalid CIDR {text!r}") from None
    if "/" not in text:
        raise PolicyError(f"{path}: invalid CIDR {text!r}: give the prefix length, e.g. {text}/32")
    if network.version != 4:
        raise PolicyError(f"{path}: {text}: pyctr networks are IPv4")
    return network


def _port(port, path: str) -> dict:
    _fields(port, "port", path)
    protocol = port.get("protocol", "TCP")
    if protocol not in PROTOCOLS:
        raise PolicyError(f"{path}.protocol: {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    out = {"protocol": protocol}
    if port.get("port") is not None:
        number = port["port"]
        if isinstance(number, str):
            if number.isdigit():
                raise PolicyError(f"{path}.port: {number!r} is a string: write the number unquoted")
            raise PolicyError(f"{path}.port: named ports ({number!r}) are not supported: give the number")
        out["port"] = _port_number(number, f"{path}.port")
    if port.get("endPort") is not None:
        if "port" not in out:
            raise PolicyError(f"{path}.endPort: needs port, the first of the range")
        end = _port_number(port["endPort"], f"{path}.endPort")
        if end < out["port"]:
            raise PolicyError(f"{path}.endPort: {end} is below port {out['port']}")
        out["endPort"] = end
    return out


def _port_number(value, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise PolicyError(f"{path}: {value!r} is not a port number (1-65535)")
    return value


def _policy_types(spec: dict, egress: list) -> list[str]:
    """As the API server defaults it: Ingress always, Egress when there are egress rules."""
    types = spec.get("policyTypes")
    if types is None:
        return ["Ingress"] + (["Egress"] if egress else [])
    if not isinstance(types, list) or not types:
        raise PolicyError("spec.policyTypes: expected a list of Ingress and/or Egress")
    for i, value in enumerate(types):
        if value not in ("Ingress", "Egress"):
            raise PolicyError(f"spec.policyTypes[{i}]: {value!r} is not Ingress or Egress")
    if len(set(types)) != len(types):
        raise PolicyError("spec.policyTypes: a type is listed twice")
    return list(types)


# --- label selectors ------------------------------------------------------------------------
def check_selector(selector, path: str) -> dict:
    """A LabelSelector (matchLabels, matchExpressions) checked as Kubernetes checks it."""
    if selector is None:
        selector = {}
    _fields(selector, "selector", path)
    out = {}
    match_labels = selector.get("matchLabels")
    if match_labels is not None:
        if not isinstance(match_labels, dict):
            raise PolicyError(f"{path}.matchLabels: expected a map, got {_type_name(match_labels)}")
        for key, value in match_labels.items():
            _label_key(key, f"{path}.matchLabels")
            _label_value(value, f"{path}.matchLabels.{key}")
        if match_labels:
            out["matchLabels"] = dict(match_labels)
    expressions = selector.get("matchExpressions")
    if expressions is not None:
        if not isinstance(expressions, list):
            raise PolicyError(f"{path}.matchExpressions: expected a list, got {_type_name(expressions)}")
        checked = [_expression(e, f"{path}.matchExpressions[{i}]") for i, e in enumerate(expressions)]
        if checked:
            out["matchExpressions"] = checked
    return out


def _expression(expression, path: str) -> dict:
    _fields(expression, "expression", path)
    key = expression.get("key")
    if key is None:
        raise PolicyError(f"{path}.key: required")
    _label_key(key, path)
    operator = expression.get("operator")
    if operator not in OPERATORS:
        raise PolicyError(f"{path}.operator: {operator!r} is not one of {', '.join(OPERATORS)}")
    values = expression.get("values")
    if operator in ("In", "NotIn"):
        if not isinstance(values, list) or not values:
            raise PolicyError(f"{path}.values: {operator} needs at least one value")
        for i, value in enumerate(values):
            _label_value(value, f"{path}.values[{i}]")
        return {"key": key, "operator": operator, "values": list(values)}
    if values:
        raise PolicyError(f"{path}.values: {operator} takes no values")
    return {"key": key, "operator": operator}


def _label_key(key, path: str) -> None:
    if not isinstance(key, str):
        raise PolicyError(f"{path}: label key {key!r} is not a string")
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_PREFIX.match(prefix)):
        raise PolicyError(f"{path}: invalid label key {key!r}: the prefix must be a DNS subdomain")
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        raise PolicyError(f"{path}: invalid label key {key!r}: at most 63 letters, digits, '-', '_' "
                          "or '.', starting and ending with a letter or digit")


def _label_value(value, path: str) -> None:
    if not isinstance(value, str):
        raise PolicyError(f"{path}: label value {value!r} is not a string (quote it)")
    if value and (len(value) > 63 or not _LABEL_NAME.match(value)):
        raise PolicyError(f"{path}: invalid label value {value!r}: at most 63 letters, digits, '-', '_' "
                          "or '.', starting and ending with a letter or digit")


def matches(selector: dict, labels: dict) -> bool:
    """Whether a container with `labels` is selected; {} selects every container."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        if operator == "In" and labels.get(key) not in expression["values"]:
            return False
        if operator == "NotIn" and key in labels and labels[key] in expression["values"]:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def selector_text(selector: dict) -> str:
    """Kubernetes' string form (app=web,tier in (a,b),!debug); "<all>" for {}."""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for e in selector.get("matchExpressions") or []:
        if e["operator"] == "In":
            parts.append(f"{e['key']} in ({','.join(e['values'])})")
        elif e["operator"] == "NotIn":
            parts.append(f"{e['key']} notin ({','.join(e['values'])})")
        elif e["operator"] == "Exists":
            parts.append(e["key"])
        else:
            parts.append("!" + e["key"])
    return ",".join(parts) or "<all>"


def _is_string_map(value) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


def _join(path: str, key) -> str:
    return f"{path}.{key}" if path else str(key)


def _type_name(value) -> str:
    return {dict: "a map", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "nothing"}.get(type(value), type(value).__name__)
