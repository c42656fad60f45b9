"""pyctr's own nftables table, `table ip pyctr`, changed through the `nft` tool.

Rules name their owner in a comment ("pyctr network NAME", "pyctr container ID"), so the rules
of one network or one container can be found and replaced or deleted. Each change is one
`nft -f -` script, which the kernel applies as a single transaction. When the last rule goes,
the table goes whole. No other table is read or written here, except through transaction(),
which runs the script of pyctr's policy tables (`table inet pyctr-policy-NET`, policyrules.py).

One limit of nftables to know: a packet must be accepted by every base chain on a hook, so the
forward-accept rules here cannot undo a drop in another table (Docker's FORWARD policy DROP, a
firewall's); they make pyctr's own intent explicit. A drop here, on the other hand, is final:
the `isolation` chain keeps bridge networks closed whatever other tables accept.
"""

import json
from collections import namedtuple

from pyctr.runtime import explain, hosttools, jsonstore, settings
from pyctr.runtime.errors import PyctrError

FAMILY = "ip"
TABLE = "pyctr"

# Base chains, declared with `add` so that declaring them again is harmless.
CHAINS = {
    "prerouting": "type nat hook prerouting priority dstnat; policy accept;",
    "output": "type nat hook output priority -100; policy accept;",
    "postrouting": "type nat hook postrouting priority srcnat; policy accept;",
    "forward": "type filter hook forward priority filter; policy accept;",
    # Before `forward`, and on its own base chain so that no accept of another owner's rules
    # (chains are shared, rules run in the order they were added) can skip its drops.
    "isolation": "type filter hook forward priority filter - 10; policy accept;",
}


class Rule(namedtuple("Rule", "chain statement")):
    """A rule of the chain `chain` (a name of CHAINS); `statement` is nft syntax without the
    comment, e.g. 'ip saddr 172.17.0.0/16 masquerade'. (A named tuple: see driver.PortMapping.)"""
    __slots__ = ()


def network_owner(name: str) -> str:
    return f"pyctr network {name}"


def container_owner(container_id: str) -> str:
    return f"pyctr container {container_id}"


def replace_rules(owner: str, rules: list[Rule], check=None) -> None:
    """Make `rules` the only rules of `owner`, in one transaction. `check(table)`, given the
    table's rules (nft's JSON objects), may refuse by raising, under the same lock."""
    with _lock():
        table = _list_table() or []
        if check is not None:
            check(table)
        lines = _declare_table()
        lines += [_delete(rule) for rule in table if rule.get("comment") == owner]
        lines += [f'add rule {FAMILY} {TABLE} {r.chain} {r.statement} comment "{owner}"' for r in rules]
        _apply(lines)


def delete_rules(owner: str) -> None:
    """Delete the rules of `owner`; delete the whole table when nothing else is left in it."""
    with _lock():
        table = _list_table()
        if table is None:
            return
        mine = [rule for rule in table if rule.get("comment") == owner]
        if len(mine) == len(table):
            _apply([f"delete table {FAMILY} {TABLE}"])
        elif mine:
            _apply([_delete(rule) for rule in mine])


def owners() -> set[str]:
    """The comments found on the table's rules (for tests and `network inspect`)."""
    return {rule.get("comment", "") for rule in _list_table() or []}


def published_ports(exclude_owner: str = "") -> list[tuple[str, str, int, str]]:
    """(owner, protocol, port, host IP or "") of the DNAT rules in the table now."""
    return dnat_ports(_list_table() or [], exclude_owner)


def dnat_ports(table: list[dict], exclude_owner: str = "") -> list[tuple[str, str, int, str]]:
    """The published ports that the prerouting DNAT rules of `table` (as listed) hold."""
    found = []
    for rule in table:
        owner = rule.get("comment", "")
        if rule.get("chain") != "prerouting" or owner == exclude_owner:
            continue
        protocol, port, host_ip = None, None, ""
        for expr in rule.get("expr", []):
            match = expr.get("match") if isinstance(expr, dict) else None
            payload = (match or {}).get("left", {}).get("payload") if isinstance(match, dict) else None
            if not isinstance(payload, dict):
                continue
            if payload.get("field") == "dport":
                protocol, port = payload.get("protocol"), match.get("right")
            elif payload.get("protocol") == "ip" and payload.get("field") == "daddr":
                host_ip = str(match.get("right"))
        if protocol and isinstance(port, int) and any("dnat" in e for e in rule.get("expr", [])):
            found.append((owner, protocol, port, host_ip))
    return found


def transaction(lines: list[str]) -> None:
    """Run `lines` as one `nft -f -` script: one kernel transaction, all or nothing (for the
    tables of other modules, such as policyrules'; this module's own go through the above)."""
    _apply(lines)


def table_exists() -> bool:
    return _list_table() is not None


def _declare_table() -> list[str]:
    lines = [f"add table {FAMILY} {TABLE}"]
    lines += [f"add chain {FAMILY} {TABLE} {name} {{ {spec} }}" for name, spec in CHAINS.items()]
    return lines


def _delete(rule: dict) -> str:
    return f"delete rule {FAMILY} {TABLE} {rule['chain']} handle {rule['handle']}"


def _list_table() -> list[dict] | None:
    """The rules of pyctr's table as nft's JSON objects, or None when there is no table."""
    import subprocess  # here, as in iproute: a container without published ports never runs nft

    result = subprocess.run([hosttools.tool("nft"), "-j", "list", "table", FAMILY, TABLE],
                            capture_output=True, text=True)
    if result.returncode != 0:
        if "No such file or directory" in result.stderr:
            return None
        raise PyctrError(f"nft list table {FAMILY} {TABLE}: {result.stderr.strip()}")
    items = json.loads(result.stdout)["nftables"]
    return [item["rule"] for item in items if "rule" in item]


def _apply(lines: list[str]) -> None:
    script = "\n".join(lines) + "\n"
    explain.shell("nft -f - <<'EOF'\n" + script + "EOF")
    import subprocess

    try:
        result = subprocess.run([hosttools.tool("nft"), "-f", "-"], input=script, capture_output=True, text=True)
    except FileNotFoundError:
        raise PyctrError("nft not found: install the nftables package") from None
    if result.returncode != 0:
        first = (result.stderr.strip().splitlines() or ["failed"])[0]
        raise PyctrError(f"nft -f -: {first}")


def _lock():
    # Listing handles and deleting them must not interleave with another pyctr doing the same.
    return jsonstore.locked(settings.current().locks_dir / "nft.lock")
