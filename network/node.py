"""This host as a node of the cluster: `pyctr node start|stop|rm|ls`.

A running node is three things:

  - its document in etcd, /pyctr/nodes/NODE ({"address", "asn", "gateway", "masquerade",
    "out"}), under a lease of --lease-ttl seconds that its agent keeps alive: a host that dies
    loses it, and the other nodes drop it from their mesh;
  - BIRD (network/bird.py), the BGP speaker: it tells the mesh this node's blocks and puts
    the other nodes' blocks into the kernel;
  - the node agent (network/nodeagent.py): BIRD's parent, which keeps the lease alive and
    renders BIRD's configuration again when nodes or blocks change in etcd.

Their files are in $PYCTR_STATE/node/: node.json (what `node start` was given, and the lease),
bird.conf, bird.ctl (BIRD's control socket), bird.pid, bird.log, agent.pid, agent.log, and wake
(a FIFO: a `run` that claims a block, or a `network rm` that frees some, wakes the agent at once).

A gateway node (--gateway, the walk-through's head node) runs no containers: it peers with the
mesh, learns every block, and with --masquerade CIDR --out IFACE NATs the cluster's traffic that
leaves through IFACE, in pyctr's own nftables table.
"""

import contextlib
import ipaddress
import json
import os
import re
import signal
import socket
import time
from pathlib import Path

from pyctr.network import bird, datastore, iproute, networks, nft, sysctl
from pyctr.runtime import explain, hosttools, jsonstore, settings
from pyctr.runtime.errors import ConflictError, NotFoundError, PyctrError

DEFAULT_LEASE_TTL = 10
AGENT_MODULE = "pyctr.network.nodeagent"
READY_TIMEOUT = 20.0  # the agent answers once BIRD listens on its control socket
STOP_TIMEOUT = 10.0
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


class Files:
    """The node's files in $PYCTR_STATE/node/."""

    def __init__(self, state: Path | None = None):
        state = state or settings.current().state
        self.dir = state / "node"
        self.settings = self.dir / "node.json"
        self.bird_conf = self.dir / "bird.conf"
        self.bird_ctl = self.dir / "bird.ctl"
        self.bird_pid = self.dir / "bird.pid"
        self.bird_log = self.dir / "bird.log"
        self.agent_pid = self.dir / "agent.pid"
        self.agent_log = self.dir / "agent.log"
        self.wake = self.dir / "wake"  # a FIFO the agent reads: a byte means "sync now"
        self.lock = state / "locks" / "node.lock"


def document(node: dict) -> dict:
    """The node's document in etcd, from its settings (node.json)."""
    return {key: node[key] for key in ("address", "asn", "gateway", "masquerade", "out")}


def owner(name: str) -> str:
    """The owner of a gateway's rules in pyctr's nftables table."""
    return f"pyctr node {name}"


# --- start -------------------------------------------------------------------------------------
def start(url: str, name: str, address: str, asn: int, hold_time: int, lease_ttl: int,
          gateway: bool, masquerade: str | None, out: str | None) -> None:
    node = _checked(url, name, address, asn, hold_time, lease_ttl, gateway, masquerade, out)
    files = Files()
    settings.make_private(files.dir)
    with jsonstore.locked(files.lock):
        _wait_for_dying_agent(files)
        pid = agent_pid(files)
        if pid is not None:
            running = jsonstore.read_json(files.settings, {}) or {}
            raise ConflictError(f"this host runs node {running.get('name', '?')} already (agent PID {pid}): "
                                f"pyctr node stop first")
        _clean_up(files)  # what a node whose agent died left
        store = datastore.Datastore(url)
        undo = []
        try:
            node["lease"] = _register(store, node, undo)
            jsonstore.write_json(files.settings, node)
            undo.append(lambda: files.settings.unlink(missing_ok=True))
            if gateway:
                sysctl.write("net.ipv4.ip_forward", 1)
            if gateway_rules(node):
                nft.replace_rules(owner(name), gateway_rules(node))
                undo.append(lambda: nft.delete_rules(owner(name)))
            text = bird_config(store, node)
            explain.write_file(files.bird_conf, text)
            files.bird_conf.write_text(text)
            undo.append(lambda: files.bird_conf.unlink(missing_ok=True))
            explain.shell(f"{_bird_command(files)} &")
            explain.comment(f"the node agent keeps lease {node['lease']:x} alive (etcdctl lease keep-alive), "
                            f"and renders {files.bird_conf} again and runs `birdc -s {files.bird_ctl} "
                            f"configure` when nodes or blocks change in the datastore")
            _spawn_agent(files)
        except BaseException:
            for step in reversed(undo):
                with contextlib.suppress(Exception):
                    step()
            raise


def _checked(url, name, address, asn, hold_time, lease_ttl, gateway, masquerade, out) -> dict:
    """The node's settings, once every argument is known good (nothing is changed before)."""
    if not _NAME.match(name):
        raise PyctrError(f"invalid node name {name!r}: letters, digits, '_', '.' or '-', at most 63")
    address = str(networks.parse_address(address, "node address"))
    _check_local(address)
    if not 1 <= asn <= 4294967295:
        raise PyctrError(f"invalid AS number {asn}: 1 to 4294967295")
    if not (hold_time == 0 or 3 <= hold_time <= 65535):
        raise PyctrError(f"invalid BGP hold time {hold_time}: 0 (none) or 3 to 65535 seconds")
    if not 2 <= lease_ttl <= 3600:
        raise PyctrError(f"invalid lease TTL {lease_ttl}: 2 to 3600 seconds")
    if (masquerade or out) and not gateway:
        raise PyctrError("--masquerade and --out are for a gateway node (--gateway)")
    if bool(masquerade) != bool(out):
        raise PyctrError("--masquerade CIDR and --out IFACE go together")
    if masquerade:
        masquerade = str(networks.parse_subnet(masquerade))
        if not _IFNAME.match(out):
            raise PyctrError(f"invalid interface name {out!r}")
        if not iproute.link_exists(out):  # /proc/net: this netns (/sys may show another's)
            raise PyctrError(f"no interface {out} on this host")
    for tool in ("bird", "birdc"):
        hosttools.tool(tool)  # one line when bird2 is not installed
    return {"name": name, "datastore": url, "address": address, "asn": asn, "hold_time": hold_time,
            "lease_ttl": lease_ttl, "gateway": gateway, "masquerade": masquerade, "out": out}


def _check_local(address: str) -> None:
    # BIRD speaks from this address: it must be one of this host's (a bind says so, no process).
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError:
            raise PyctrError(f"address {address} is not an address of this host") from None


def _register(store: datastore.Datastore, node: dict, undo: list) -> int:
    endpoint = f"http://{store.url.removeprefix('etcd://')}"
    explain.step("etcdctl", f"--endpoints={endpoint}", "lease", "grant", node["lease_ttl"])
    explain.step("etcdctl", f"--endpoints={endpoint}", "put", "--lease=LEASE_ID", datastore.node_key(node["name"]),
                 json.dumps(document(node), sort_keys=True))
    lease = register(store, node)
    undo.append(lambda: store.revoke(lease))
    return lease


def register(store: datastore.Datastore, node: dict) -> int:
    """Put the node's document under a new lease: its ID. The name may be taken already only by
    this same node (a restart before its old lease expired, or an agent whose lease expired)."""
    lease = store.grant(node["lease_ttl"])
    try:
        key, doc = datastore.node_key(node["name"]), document(node)
        protocol = bird.protocol_name(node["name"])
        for other in registered(store):
            if other != node["name"] and bird.protocol_name(other) == protocol:
                raise ConflictError(f"node name {node['name']} and node {other} would share BIRD's "
                                    f"session name {protocol}: choose another name")
        created, existing = store.create(key, doc, lease=lease)
        if not created:
            if existing and existing.get("address") != node["address"]:
                raise ConflictError(f"node {node['name']} is registered in {store.url} with address "
                                    f"{existing.get('address')}, not {node['address']}")
            store.put(key, doc, lease=lease)  # the same node again: the key moves to the new lease
    except BaseException:
        with contextlib.suppress(PyctrError):
            store.revoke(lease)
        raise
    return lease


def gateway_rules(node: dict) -> list[nft.Rule]:
    """A gateway forwards the cluster's traffic, and NATs what leaves through --out."""
    cidr = node.get("masquerade")
    if not cidr:
        return []
    return [nft.Rule("forward", f"ip saddr {cidr} accept"),
            nft.Rule("forward", f"ip daddr {cidr} accept"),
            nft.Rule("postrouting", f'oifname "{node["out"]}" ip saddr {cidr} ip daddr != {cidr} masquerade')]


def bird_config(store: datastore.Datastore, node: dict) -> str:
    """bird.conf of `node` from what etcd holds now: every other node, and this one's blocks."""
    return config_from(node, registered(store), blocks_by_node(store))


def config_from(node: dict, nodes: dict[str, dict], blocks: dict[str, list[str]]) -> str:
    peers = {name: doc for name, doc in nodes.items() if name != node["name"]}
    own = [] if node["gateway"] else sorted(blocks.get(node["name"], []), key=ipaddress.IPv4Network)
    return bird.render(node["name"], node["address"], node["asn"], node["hold_time"], peers, own)


def registered(store: datastore.Datastore) -> dict[str, dict]:
    """The nodes whose agents keep their lease: {name: document}. Each is checked as `node start`
    checks its arguments: names, addresses and AS numbers become BIRD's configuration."""
    prefix = datastore.nodes_prefix()
    nodes = {}
    for key, doc in store.get_prefix(prefix).items():
        try:
            name = key[len(prefix):]
            asn = doc.get("asn", bird.DEFAULT_ASN)
            if not _NAME.match(name) or not isinstance(asn, int) or not 1 <= asn <= 4294967295:
                raise ValueError("a node name and an AS number as `node start` takes them")
            ipaddress.IPv4Address(doc["address"])
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise datastore.not_valid(key, "node", e) from None
        nodes[name] = doc
    return nodes


def blocks_by_node(store: datastore.Datastore) -> dict[str, list[str]]:
    prefix = datastore.all_blocks_prefix()
    found: dict[str, list[str]] = {}
    for key, doc in store.get_prefix(prefix).items():
        try:
            block = str(ipaddress.IPv4Network(key[len(prefix):].partition("/")[2]))  # NET/CIDR
            owner = doc.get("node", "?")
            if not isinstance(owner, str):
                raise ValueError(f"its node is {owner!r}, not a name")
        except (ValueError, AttributeError) as e:
            raise datastore.not_valid(key, "block", e) from None
        found.setdefault(owner, []).append(block)
    return found


def _bird_command(files: Files) -> str:
    import shlex

    return shlex.join(bird_argv(files))


def bird_argv(files: Files) -> list[str]:
    """BIRD in the foreground (a child of the agent), with the node's own files."""
    return [hosttools.tool("bird"), "-f", "-c", str(files.bird_conf), "-s", str(files.bird_ctl),
            "-P", str(files.bird_pid)]


def _spawn_agent(files: Files) -> int:
    """Start the agent, detached from us (its own session, in /, `python -I`, none of our
    descriptors but the pipe it answers on), and wait until it says BIRD runs: its PID."""
    ready_r, ready_w = os.pipe()
    argv = hosttools.python("-m", AGENT_MODULE, str(files.dir), str(ready_w))
    hosttools.spawn_detached(argv, hosttools.pyctr_environment(), str(files.agent_log), str(files.agent_log), ready_w)
    os.close(ready_w)
    answer = _read_answer(ready_r)
    word, _, rest = answer.strip().partition(" ")
    if word == "ready" and rest.isdigit():
        return int(rest)
    raise PyctrError(f"node agent: {rest or 'exited without an answer'} (see {files.agent_log})")


def _read_answer(fd: int) -> str:
    import select

    chunks = []
    deadline = time.monotonic() + READY_TIMEOUT
    try:
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([fd], [], [], left)
            if not readable:
                break
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode(errors="replace")


# --- the running node ----------------------------------------------------------------------------
def agent_pid(files: Files) -> int | None:
    """The PID of this host's node agent, if it runs."""
    return _pid_running(files.agent_pid, lambda cmdline: AGENT_MODULE.encode() in cmdline
                        and str(files.dir).encode() in cmdline)


def bird_pid(files: Files) -> int | None:
    """The PID of the node's BIRD, if it runs."""
    return _pid_running(files.bird_pid, lambda cmdline: str(files.bird_ctl).encode() in cmdline)


def _pid_running(pid_file: Path, is_it) -> int | None:
    try:
        pid = int(pid_file.read_text().split()[0])
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
        with open(f"/proc/{pid}/stat", "rb") as f:
            zombie = f.read().rpartition(b")")[2].split()[0] == b"Z"
    except (OSError, ValueError, IndexError):
        return None
    return pid if is_it(cmdline) and not zombie else None


def running() -> dict | None:
    """The settings of this host's node while its agent runs."""
    files = Files()
    if agent_pid(files) is None:
        return None
    return jsonstore.read_json(files.settings, None)


def _wait_for_dying_agent(files: Files, timeout: float = 5.0) -> None:
    # An agent whose BIRD died exits within its poll period: a start right after waits for it.
    deadline = time.monotonic() + timeout
    while agent_pid(files) is not None and bird_pid(files) is None and time.monotonic() < deadline:
        time.sleep(0.05)


def wake_agent() -> None:
    """Tell this host's node agent that its blocks changed in etcd, so that BIRD announces them
    now rather than at the agent's next poll. Nothing happens when no agent runs: there is no
    FIFO, or no one reads it (ENXIO)."""
    try:
        fd = os.open(Files().wake, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return
    try:
        os.write(fd, b"\n")
    except BlockingIOError:
        pass  # the FIFO is full: the agent has been woken already
    finally:
        os.close(fd)


# --- stop --------------------------------------------------------------------------------------
def stop() -> str:
    """Stop the agent (which stops BIRD and revokes the lease), and undo the gateway's rules."""
    files = Files()
    with jsonstore.locked(files.lock):
        node = jsonstore.read_json(files.settings, None)
        if node is None:
            raise NotFoundError("no pyctr node runs on this host")
        pid = agent_pid(files)
        if pid is not None:
            explain.step("kill", "-TERM", pid)
            os.kill(pid, signal.SIGTERM)
            if not _wait_gone(lambda: agent_pid(files), STOP_TIMEOUT):
                os.kill(pid, signal.SIGKILL)
                _wait_gone(lambda: agent_pid(files), STOP_TIMEOUT)
        _clean_up(files)
        return node["name"]


def _wait_gone(pid_of, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while pid_of() is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _clean_up(files: Files) -> None:
    """What a stopped node leaves: a BIRD without its agent (it normally dies with it), the lease
    (the agent revokes it; after a crash it may live on for its TTL), the gateway's rules, and
    the node's files but the logs."""
    node = jsonstore.read_json(files.settings, None)
    if node is None:
        return
    pid = bird_pid(files)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        _wait_gone(lambda: bird_pid(files), STOP_TIMEOUT)
    if node.get("lease"):
        # An etcd that cannot be reached lets the lease expire on its own.
        with contextlib.suppress(PyctrError):
            datastore.Datastore(node["datastore"]).revoke(node["lease"])
    if node.get("gateway"):
        nft.delete_rules(owner(node["name"]))
    for path in (files.settings, files.bird_conf, files.bird_ctl, files.bird_pid, files.agent_pid, files.wake):
        path.unlink(missing_ok=True)


# --- rm and ls -----------------------------------------------------------------------------------
def remove(url: str, name: str) -> None:
    """Forget a node that no longer runs: its blocks, addresses and endpoints in every network,
    and its memberships (a pool and its policies go with its last member, as at `network rm`)."""
    store = datastore.Datastore(url)
    if store.get(datastore.node_key(name)) is not None:
        raise ConflictError(f"node {name} is running (its agent keeps its lease): "
                            f"run `pyctr node stop` on it first")
    prefix = datastore.PREFIX
    found = store.get_prefix(prefix)
    held = [key for key, doc in found.items()
            if key.startswith((f"{prefix}blocks/", f"{prefix}ipam/", f"{prefix}endpoints/")) and doc.get("node") == name]
    members = [key for key in found if key.startswith(f"{prefix}members/") and key.rpartition("/")[2] == name]
    if not held and not members:
        raise NotFoundError(f"no such node: {name}")
    store.delete(*held, *members)
    for member in members:
        net = member[len(f"{prefix}members/"):].rpartition("/")[0]
        if not store.get_prefix(datastore.member_key(net, "")):
            store.delete(datastore.pool_key(net), *store.get_prefix(datastore.policies_prefix(net)))


def listing(url: str) -> list[dict]:
    """Every node of the datastore (and every node that still holds blocks): name, address,
    ASN, role, blocks, and the state of this host's BGP session with it."""
    store = datastore.Datastore(url)
    nodes = registered(store)
    blocks = blocks_by_node(store)
    local = running()
    states = {}
    if local is not None:
        with contextlib.suppress(PyctrError):
            states = {s["name"]: s["state"] for s in bird.sessions(str(Files().bird_ctl))}
    rows = []
    for name in sorted(set(nodes) | set(blocks)):
        doc = nodes.get(name)
        if local is None:
            bgp = "-"
        elif name == local["name"]:
            bgp = "this node"
        else:
            bgp = states.get(bird.protocol_name(name), "none")
        rows.append({"name": name, "address": doc["address"] if doc else "-",
                     "asn": str(doc.get("asn", "")) if doc else "-",
                     "role": ("gateway" if doc.get("gateway") else "node") if doc else "down",
                     "blocks": sorted(blocks.get(name, []), key=ipaddress.IPv4Network), "bgp": bgp})
    return rows


# --- the handlers of `pyctr node …` --------------------------------------------------------------
def _url(given: str | None, fallback_to_local: bool = False) -> str:
    url = datastore.url_from(given)
    if url is None and fallback_to_local:
        url = (running() or {}).get("datastore")
    if url is None:
        raise PyctrError("no datastore: give --datastore etcd://HOST:PORT or set PYCTR_DATASTORE")
    return url


def cmd_start(args) -> int:
    start(_url(args.datastore), args.name, args.address, args.asn, args.bgp_hold_time, args.lease_ttl,
          args.gateway, args.masquerade, args.out)
    print(args.name)
    return 0


def cmd_stop(args) -> int:
    print(stop())
    return 0


def cmd_rm(args) -> int:
    url = _url(args.datastore, fallback_to_local=True)
    for name in args.names:
        remove(url, name)
        print(name)
    return 0


def cmd_ls(args) -> int:
    rows = listing(_url(args.datastore, fallback_to_local=True))
    if args.quiet:
        for row in rows:
            print(row["name"])
        return 0
    table = [("NAME", "ADDRESS", "ASN", "ROLE", "BLOCKS", "BGP")]
    table += [(r["name"], r["address"], r["asn"], r["role"], ",".join(r["blocks"]) or "-", r["bgp"]) for r in rows]
    widths = [max(len(row[i]) for row in table) + 2 for i in range(len(table[0]) - 1)]
    for row in table:
        print("".join(cell.ljust(width) for cell, width in zip(row, widths)) + row[-1])
    return 0
