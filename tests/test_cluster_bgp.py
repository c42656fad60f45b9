"""Issue 12's core: `pyctr node start|stop|rm|ls`, BIRD's iBGP mesh, the node agent, the gateway
(head) node, and failure. Three nodes and a gateway head, each a pyctr node in its own netns of
the sandbox; a real etcd in the head's namespace (its own data folder); BIRD and the node agents
started by pyctr. No route is typed by hand. Nothing runs in this machine's own netns.

Pools that overlap a node's own networks and block sizes larger than the pool are refused at
`network create`: tests/test_cluster_ipam.py covers those."""

import ipaddress
import json
import os
import shutil
import signal
import stat
import time
from types import SimpleNamespace

import pytest

from netsandbox import (CONTAINER_PEER_SERVER, HEAD_UNDERLAY_IP, HEAD_UPSTREAM_IP, UPSTREAM_IP, Sandbox,
                        build_cluster, etcd_delete, etcd_keys, etcd_put, eventually, fails_in_one_line,
                        peers_in_log, pull_alpine, start_etcd, start_peer_server)
from svgdrawing import Drawing

ETCD_URL = f"http://{HEAD_UNDERLAY_IP}:2379"
DATASTORE = f"etcd://{HEAD_UNDERLAY_IP}:2379"
POOL = "172.19.0.0/16"
CREATE = ("network", "create", "--driver", "routed", "--subnet", POOL, "--block-size", "28", "calico")
NODES = ("node1", "node2", "node3")
ADDRESSES = {"node1": "10.141.0.1", "node2": "10.141.0.2", "node3": "10.141.0.3", "head": HEAD_UNDERLAY_IP}
HOLD_TIME = 3
LEASE_TTL = 4
PORT = 7000
# Where to copy node1's picture of the cluster (the README's example): PYCTR_GRAPH_EXAMPLE=docs/network-graph.svg
EXAMPLE = os.environ.get("PYCTR_GRAPH_EXAMPLE")


def start_args(role: str) -> list[str]:
    args = ["node", "start", "--name", role, "--address", ADDRESSES[role], "--bgp-hold-time", str(HOLD_TIME),
            "--lease-ttl", str(LEASE_TTL)]
    if role == "head":
        args += ["--gateway", "--masquerade", POOL, "--out", "up0"]
    return args


@pytest.fixture(scope="module")
def cluster():
    sandbox = Sandbox()
    started: set[int] = set()  # every agent and BIRD PID the tests saw, to be sure none is left
    members = {}
    try:
        images = pull_alpine(sandbox.dir / "images-root")
        members = build_cluster(sandbox, images, nodes=3, head_node=True)
        start_etcd(members["head"], sandbox.dir / "etcd-data", ETCD_URL)
        for role in (*NODES, "head"):
            members[role].extra_env.update(PYCTR_NODE_NAME=role, PYCTR_DATASTORE=DATASTORE)
        # Each node's links, routes and nftables before any node or network, for the last test.
        before = {role: members[role].snapshot() for role in (*NODES, "head")}
        yield SimpleNamespace(sandbox=sandbox, before=before, started=started, **members)
    finally:
        for role in (*NODES, "head"):
            if role in members:
                members[role].remove_all_containers()
                members[role].pyctr("node", "stop", check=False)
        for pid in started:  # a stopped (SIGSTOP) or stuck one
            if is_ours(pid, sandbox):
                os.kill(pid, signal.SIGKILL)
        sandbox.close()  # etcd, and its data folder under the sandbox's


def is_ours(pid: int, sandbox) -> bool:
    """Whether `pid` is still an agent or a BIRD of this sandbox (and not a reused PID)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return str(sandbox.dir).encode() in f.read()
    except OSError:
        return False


def node_file(node, name: str):
    return node.state / "node" / name


def pid_of(node, name: str) -> int:
    return int(node_file(node, name).read_text())


def remember_pids(cluster, node) -> None:
    cluster.started.update(eventually(lambda: {pid_of(node, "agent.pid"), pid_of(node, "bird.pid")}))


def keys(cluster) -> dict:
    return etcd_keys(cluster.head, ETCD_URL)


def blocks_of(cluster, role: str) -> set[str]:
    prefix = "/pyctr/blocks/calico/"
    return {key[len(prefix):] for key, doc in keys(cluster).items()
            if key.startswith(prefix) and doc["node"] == role}


def bird_routes(node) -> dict[str, str]:
    """{destination: the line} of the routes BIRD put in the node's kernel."""
    lines = node.run("ip", "-4", "route", "show", "proto", "bird").stdout.splitlines()
    return {line.split()[0]: line for line in lines if line.strip()}


def sessions_of(node) -> dict[str, str]:
    """`node ls` as {NAME: BGP state}."""
    lines = node.pyctr("node", "ls").stdout.splitlines()
    assert lines[0].split() == ["NAME", "ADDRESS", "ASN", "ROLE", "BLOCKS", "BGP"]
    return {line.split()[0]: line.split(None, 5)[5] for line in lines[1:]}


def test_bad_node_starts_are_one_line_and_leave_nothing(cluster):
    n1, n2 = cluster.node1, cluster.node2
    unreachable = n1.pyctr(*start_args("node1"), "--datastore", f"etcd://{HEAD_UNDERLAY_IP}:2399", check=False)
    fails_in_one_line(unreachable, f"etcd://{HEAD_UNDERLAY_IP}:2399", "cannot be reached")
    fails_in_one_line(n1.pyctr("node", "start", "--name", "node1", "--address", "10.141.0.9", check=False),
                      "10.141.0.9", "not an address of this host")
    fails_in_one_line(n1.pyctr(*start_args("node1"), "--bgp-hold-time", "2", check=False), "hold time 2")
    fails_in_one_line(n1.pyctr(*start_args("node1"), "--masquerade", POOL, check=False), "--gateway")

    n2.pyctr(*start_args("node2"))
    remember_pids(cluster, n2)
    before = keys(cluster)
    # Another host under node2's name: refused, and node2's registration stays as it was.
    taken = n1.pyctr("node", "start", "--name", "node2", "--address", ADDRESSES["node1"], check=False)
    fails_in_one_line(taken, "node node2 is registered", ADDRESSES["node2"])
    fails_in_one_line(n2.pyctr(*start_args("node2"), check=False), "runs node node2 already")
    assert keys(cluster) == before
    assert not node_file(n1, "node.json").exists()
    assert n1.run("nft", "list", "ruleset").stdout == cluster.before["node1"]["nft"]


def test_nodes_register_under_leases_and_form_a_full_mesh(cluster):
    explained = cluster.node1.pyctr("--explain", *start_args("node1")).stderr
    assert "etcdctl --endpoints=http://10.141.255.254:2379 lease grant 4" in explained
    assert f"bird -f -c {node_file(cluster.node1, 'bird.conf')}" in explained
    for role in ("node3", "head"):
        getattr(cluster, role).pyctr(*start_args(role))
    for role in (*NODES, "head"):
        remember_pids(cluster, getattr(cluster, role))
    nodes = {key.rpartition("/")[2]: doc for key, doc in keys(cluster).items() if key.startswith("/pyctr/nodes/")}
    assert nodes == {role: {"address": ADDRESSES[role], "asn": 64512, "gateway": role == "head",
                            "masquerade": POOL if role == "head" else None, "out": "up0" if role == "head" else None}
                     for role in (*NODES, "head")}
    # node1's agent renders a session for each other node (within its poll period).
    # The FIFO through which a `run` that claims a block wakes node1's agent.
    assert stat.S_ISFIFO(node_file(cluster.node1, "wake").stat().st_mode)
    conf = eventually(lambda: {"mesh_node2", "mesh_node3", "mesh_head"} <= set(
        (text := node_file(cluster.node1, "bird.conf").read_text()).split()) and text, timeout=3)
    assert "mesh_node1" not in conf
    for role in (*NODES, "head"):
        node = getattr(cluster, role)
        expected = {other: "Established" for other in (*NODES, "head") if other != role} | {role: "this node"}
        eventually(lambda: sessions_of(node) == expected or None, timeout=15)
    gateway_rules = cluster.head.run("nft", "list", "table", "ip", "pyctr").stdout
    assert 'oifname "up0" ip saddr 172.19.0.0/16 ip daddr != 172.19.0.0/16 masquerade' in gateway_rules


def test_containers_on_three_nodes_talk_with_their_real_addresses_no_route_typed(cluster):
    ips = {}
    for role in NODES:
        node = getattr(cluster, role)
        node.pyctr(*CREATE)
        node.start("--name", f"c-{role}", "--network", "calico", "alpine", "sh", "-c",
                   CONTAINER_PEER_SERVER.format(port=PORT))
        ips[role] = node.ip_of(f"c-{role}")
    blocks = {role: blocks_of(cluster, role) for role in NODES}
    for role in NODES:  # every node learns the others' blocks from BGP, via their addresses
        node = getattr(cluster, role)
        wanted = {block: ADDRESSES[other] for other in NODES if other != role for block in blocks[other]}
        eventually(lambda: all(f"via {via} dev eth0" in bird_routes(node).get(block, "")
                               for block, via in wanted.items()), timeout=10)
        assert not blocks[role] & set(bird_routes(node))  # its own blocks stay its blackholes
    every_block = set().union(*blocks.values())
    eventually(lambda: set(bird_routes(cluster.head)) == every_block or None, timeout=10)
    for role in NODES:  # and no route was typed
        assert json.loads(getattr(cluster, role).pyctr("network", "inspect", "calico").stdout)[0]["Routes"] == []

    for client, server in (("node1", "node2"), ("node2", "node3"), ("node3", "node1")):
        got = getattr(cluster, client).exec(f"c-{client}", f"nc -w 3 {ips[server]} {PORT} </dev/null").stdout
        assert "pong" in got
        logs = getattr(cluster, server).pyctr("logs", f"c-{server}")
        assert ips[client] in peers_in_log(logs.stdout + logs.stderr)  # no NAT inside the cluster
    getattr(cluster, "node1").exec("c-node1", f"ping -c1 -W2 {ips['node3']}")

    start_peer_server(cluster.upstream, UPSTREAM_IP, 8080)
    seen = cluster.node2.exec("c-node2", f"wget -T3 -qO- http://{UPSTREAM_IP}:8080/").stdout.strip()
    assert seen == HEAD_UPSTREAM_IP  # the head's gateway masquerades the pool


def test_the_picture_of_the_cluster_drawn_on_node1(cluster, tmp_path):
    """The README's example (PYCTR_GRAPH_EXAMPLE=docs/network-graph.svg copies it out): three
    nodes and the gateway head, every session of node1 Established."""
    n1 = cluster.node1
    eventually(lambda: set(sessions_of(n1).values()) == {"Established", "this node"} or None, timeout=15)
    path = tmp_path / "calico.svg"
    n1.pyctr("network", "graph", "calico", "-o", path)
    drawing = Drawing(path)
    lines = drawing.lines()
    assert "network calico: routed, 172.19.0.0/16 (the cluster, from its datastore)" in lines
    assert set(drawing.boxes) == {*NODES, "head (gateway)"}
    for role in NODES:
        node = getattr(cluster, role)
        cid = node.inspect(f"c-{role}", "{{.Id}}")
        # node1 names its own container; the others' it knows by their IDs (etcd records IDs).
        texts = [ADDRESSES[role], "AS 64512", f"eth0 {node.ip_of(f'c-{role}')}/32",
                 f"c-{role}" if role == "node1" else cid[:12]]
        texts += [f"block {block}" for block in blocks_of(cluster, role)]
        for text in texts:
            assert drawing.inside(role, text), (role, text, lines)
    for text in (HEAD_UNDERLAY_IP, "masquerade 172.19.0.0/16 out up0"):
        assert drawing.inside("head (gateway)", text), (text, lines)
    # node1's sessions with node2, node3 and the head, all up (solid lines).
    assert sorted(line for line in lines if line.startswith("BGP ")) == ["BGP Established"] * 3, lines
    assert "the outside" in lines and "out up0" in lines
    if EXAMPLE:
        shutil.copyfile(path, EXAMPLE)


def test_containers_keep_their_routes_while_etcd_cannot_be_reached(cluster):
    n1, head = cluster.node1, cluster.head
    learned = set(bird_routes(n1))
    assert len(learned) == 2
    # etcd refuses every node for two seconds (a reset: the agents notice at once; less than
    # the lease's TTL, so no lease expires meanwhile).
    head.nft("add table ip cutoff\n"
             "add chain ip cutoff input { type filter hook input priority -5; policy accept; }\n"
             "add rule ip cutoff input tcp dport 2379 reject with tcp reset\n")
    try:
        eventually(lambda: "cannot be reached" in node_file(n1, "agent.log").read_text() or None, timeout=3)
        assert set(bird_routes(n1)) == learned
        n1.exec("c-node1", f"ping -c1 -W2 {cluster.node3.ip_of('c-node3')}")
    finally:
        head.nft("delete table ip cutoff\n")
    eventually(lambda: "answers again" in node_file(n1, "agent.log").read_text() or None, timeout=5)
    assert set(bird_routes(n1)) == learned
    assert {f"/pyctr/nodes/{role}" for role in (*NODES, "head")} <= set(keys(cluster))


def wait_for_route(node, block: str, present: bool, timeout: float) -> float:
    """Seconds until `block` is (or is no longer) among node's BGP routes."""
    started = time.monotonic()
    eventually(lambda: (block in bird_routes(node)) == present or None, timeout=timeout, interval=0.05)
    return time.monotonic() - started


# Node documents and blocks written into etcd by something other than `node start` and a claim:
# they become every node's bird.conf, which BIRD runs as root (a static route there is the node's).
BIRD_INJECTED = "10.141.0.9 as 64512;\n}\nprotocol static pwned {\n    ipv4;\n    route 0.0.0.0/0 blackhole;\n}\n#"
HOSTILE_KEYS = {
    "a node whose address closes its session and adds a static route": (
        "/pyctr/nodes/evil", {"address": BIRD_INJECTED, "asn": 64512, "gateway": False}),
    "a node whose name breaks out of its description": (
        '/pyctr/nodes/x"; } protocol static pwned { ipv4; }', {"address": "10.141.0.9", "asn": 64512}),
    "a node that is not JSON": ("/pyctr/nodes/garbage", "10.141.0.9 }; protocol static pwned {"),
    "a block whose node is not a name": ("/pyctr/blocks/calico/10.99.0.0/28", {"node": ["node1"]}),
    "a block whose CIDR is not one": (
        "/pyctr/blocks/calico/0.0.0.0/0 blackhole; route 10.0.0.0", {"node": "node1"}),
}


@pytest.mark.parametrize("case", HOSTILE_KEYS)
def test_what_etcd_holds_is_checked_before_it_becomes_birds_configuration(cluster, case):
    key, doc = HOSTILE_KEYS[case]
    configs = {role: node_file(getattr(cluster, role), "bird.conf").read_text() for role in (*NODES, "head")}
    agents = {role: pid_of(getattr(cluster, role), "agent.pid") for role in (*NODES, "head")}
    etcd_put(cluster.head, ETCD_URL, key, doc)
    try:
        time.sleep(1.2)  # two polls of every agent
        for role in (*NODES, "head"):
            node = getattr(cluster, role)
            assert node_file(node, "bird.conf").read_text() == configs[role], role
            assert "pwned" not in node.run("birdc", "-s", node_file(node, "bird.ctl"), "show", "protocols").stdout
            assert pid_of(node, "agent.pid") == agents[role] and is_ours(agents[role], cluster.sandbox), role
            assert f"{key} is not a valid" in node_file(node, "agent.log").read_text(), role
        fails_in_one_line(cluster.node1.pyctr("node", "ls", check=False), key, "not a valid")
    finally:
        etcd_delete(cluster.head, ETCD_URL, key)


def test_a_value_that_is_not_a_json_object_is_named_by_a_command_that_reads_every_key(cluster):
    """`node rm` reads every key: a list where pyctr writes objects is refused by its key, in one
    line, and nothing is removed (as `node ls` refuses it)."""
    key = "/pyctr/blocks/calico/10.99.1.0/28"
    before = keys(cluster)
    etcd_put(cluster.head, ETCD_URL, key, ["pwned"])
    try:
        for argv in (("node", "rm", "nosuch"), ("node", "ls")):
            fails_in_one_line(cluster.node1.pyctr(*argv, check=False), key, "not a valid")
    finally:
        etcd_delete(cluster.head, ETCD_URL, key)
    assert keys(cluster) == before


def test_a_killed_bird_loses_its_routes_within_the_hold_time_and_node_start_brings_them_back(cluster):
    n2 = cluster.node2
    block = sorted(blocks_of(cluster, "node2"))[0]
    bird, agent = pid_of(n2, "bird.pid"), pid_of(n2, "agent.pid")
    os.kill(bird, signal.SIGKILL)
    for role in ("node1", "node3"):
        assert wait_for_route(getattr(cluster, role), block, present=False, timeout=HOLD_TIME) <= HOLD_TIME
    # The agent follows its BIRD out, and the node leaves the datastore.
    eventually(lambda: not is_ours(agent, cluster.sandbox), timeout=5)
    eventually(lambda: "/pyctr/nodes/node2" not in keys(cluster), timeout=5)

    n2.pyctr(*start_args("node2"))
    remember_pids(cluster, n2)
    for role in ("node1", "node3", "head"):
        wait_for_route(getattr(cluster, role), block, present=True, timeout=15)
    cluster.node1.exec("c-node1", f"ping -c1 -W2 {cluster.node2.ip_of('c-node2')}")


def test_an_expired_lease_takes_the_node_out_of_the_mesh_until_its_agent_renews(cluster):
    n3 = cluster.node3
    block = sorted(blocks_of(cluster, "node3"))[0]
    agent = pid_of(n3, "agent.pid")
    # SIGSTOP, not SIGKILL: a killed agent takes its BIRD with it (the test above); a stopped one
    # leaves BIRD running, so only the lease's expiry can take node3 out of the others' mesh.
    os.kill(agent, signal.SIGSTOP)
    try:
        eventually(lambda: "/pyctr/nodes/node3" not in keys(cluster), timeout=LEASE_TTL + 3)
        for role in ("node1", "node2"):
            node = getattr(cluster, role)
            eventually(lambda: "mesh_node3" not in node_file(node, "bird.conf").read_text() or None, timeout=3)
            wait_for_route(node, block, present=False, timeout=3)
    finally:
        os.kill(agent, signal.SIGCONT)
    eventually(lambda: "/pyctr/nodes/node3" in keys(cluster), timeout=5)
    for role in ("node1", "node2"):
        wait_for_route(getattr(cluster, role), block, present=True, timeout=15)


def test_a_restarted_node_gets_its_blocks_back(cluster):
    n1 = cluster.node1
    blocks = blocks_of(cluster, "node1")
    n1.pyctr("node", "stop")
    assert not bird_routes(n1)  # BIRD took its routes out of the kernel
    assert not node_file(n1, "bird.ctl").exists()
    assert not node_file(n1, "wake").exists()
    for role in ("node2", "node3"):
        for block in blocks:
            wait_for_route(getattr(cluster, role), block, present=False, timeout=HOLD_TIME)
    n1.pyctr(*start_args("node1"))
    remember_pids(cluster, n1)
    assert blocks_of(cluster, "node1") == blocks
    for role in ("node2", "node3"):
        for block in blocks:
            wait_for_route(getattr(cluster, role), block, present=True, timeout=15)
    n1.start("--name", "again", "--network", "calico", "alpine", "sleep", "600")
    ip = ipaddress.IPv4Address(n1.ip_of("again"))
    assert any(ip in ipaddress.IPv4Network(block) for block in blocks), (ip, blocks)
    assert blocks_of(cluster, "node1") == blocks
    eventually(lambda: sessions_of(cluster.node2)["node1"] == "Established" or None, timeout=15)


def test_node_rm_and_network_rm_leave_etcd_and_every_node_as_they_were(cluster):
    n1, n3 = cluster.node1, cluster.node3
    fails_in_one_line(n1.pyctr("node", "rm", "node2", check=False), "node node2 is running")
    fails_in_one_line(n1.pyctr("node", "rm", "nosuch", check=False), "no such node: nosuch")
    # node3 goes away, and node1 forgets it: its blocks, addresses and membership.
    assert blocks_of(cluster, "node3")
    n3.pyctr("node", "stop")
    assert n1.pyctr("node", "rm", "node3").stdout.split() == ["node3"]
    assert not [key for key, doc in keys(cluster).items() if doc.get("node") == "node3" or key.endswith("/node3")]
    assert "node3" not in sessions_of(n1)
    agents = [pid for pid in cluster.started if is_ours(pid, cluster.sandbox)]
    for role in (*NODES, "head"):
        node = getattr(cluster, role)
        node.remove_all_containers()
        if role != "head":
            node.pyctr("network", "rm", "calico")
        if role != "node3":
            node.pyctr("node", "stop")
    assert keys(cluster) == {}
    for pid in agents:  # every agent and BIRD is gone
        eventually(lambda: not is_ours(pid, cluster.sandbox), timeout=5)
    for role in (*NODES, "head"):
        after = getattr(cluster, role).snapshot()
        assert after == cluster.before[role], role
    fails_in_one_line(n1.pyctr("node", "stop", check=False), "no pyctr node runs on this host")


# `birdc show protocols all`, as BIRD 2.0.12 printed it in this sandbox (cut short), and a
# session that is down: what bird.sessions() reads, for those who draw the cluster from it.
SHOW_PROTOCOLS = """\
Name       Proto      Table      State  Since         Info
device1    Device     ---        up     10:28:09.606  

blocks     Static     master4    up     10:28:09.606  
  Channel ipv4
    State:          UP
    Routes:         1 imported, 0 exported, 1 preferred

mesh_node2 BGP        ---        up     10:28:10.406  Established   
  Description:    pyctr node node2
  BGP state:          Established
    Neighbor address: 10.141.0.2
    Neighbor AS:      64512
    Hold timer:       2.264/3

mesh_node_3 BGP        ---        start  10:28:22.716  Active        Socket: Connection refused
  Description:    pyctr node node-3
  BGP state:          Active
    Neighbor address: 10.141.0.3

mesh_head  BGP        ---        down   10:29:00.000  
  Description:    pyctr node head
  BGP state:          Down
    Neighbor address: 10.141.255.254
"""


def test_bird_sessions_are_read_from_show_protocols():
    from pyctr.network import bird

    assert bird.protocol_name("node-3") == "mesh_node_3"
    assert bird.parse_protocols(SHOW_PROTOCOLS) == [
        {"name": "mesh_node2", "peer": "10.141.0.2", "state": "Established", "info": ""},
        {"name": "mesh_node_3", "peer": "10.141.0.3", "state": "Active", "info": "Socket: Connection refused"},
        {"name": "mesh_head", "peer": "10.141.255.254", "state": "Down", "info": ""},
    ]
