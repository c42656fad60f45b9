"""Issue 12's picture: `pyctr network graph NAME -o FILE.svg|.png`, drawn by graphviz.

One sandbox (netsandbox.build_cluster) for the whole file. On node1 alone: a bridge network and a
routed network with containers; the pictures must show the bridge and its gateway, each
container's name and address, and the routes. Then a cluster network: a real etcd in the head's
namespace (as tests/test_cluster_ipam.py starts it), containers on node1 and node2, routes typed
by hand, the nodes' documents written as `pyctr node start` writes them, and a real BIRD on node1
and node2 (BGP between them): the picture must show every node in its own box with its address,
blocks and containers, the gateway with its masquerade, and the sessions with their state.
SVGs are read as XML: the position of each text is checked against the boxes drawn."""

import json
import subprocess
from types import SimpleNamespace

import pytest

from netsandbox import (HEAD_UNDERLAY_IP, Sandbox, build_cluster, etcd_put, eventually, fails_in_one_line,
                        pull_alpine, start_etcd)
from svgdrawing import Drawing

ETCD_URL = f"http://{HEAD_UNDERLAY_IP}:2379"
DATASTORE = f"etcd://{HEAD_UNDERLAY_IP}:2379"
POOL = "172.19.0.0/16"
SLEEP = ("alpine", "sleep", "600")

NODE_DOCS = {
    "node1": {"address": "10.141.0.1", "asn": 64512, "gateway": False, "masquerade": None, "out": None},
    "node2": {"address": "10.141.0.2", "asn": 64512, "gateway": False, "masquerade": None, "out": None},
    "head": {"address": HEAD_UNDERLAY_IP, "asn": 64512, "gateway": True, "masquerade": POOL, "out": "up0"},
}
# node1 and node2 peer with each other (up) and with the head, where no BIRD runs (not up).
BIRD_CONFIG = """
router id {me};
protocol device {{ }}
{sessions}
"""
BIRD_SESSION = """
protocol bgp mesh_{peer} {{
    local {me} as 64512;
    neighbor {address} as 64512;
    connect delay time 1;
    connect retry time 1;
    error wait time 1, 5;
    ipv4 {{ import none; export none; }};
}}
"""


@pytest.fixture(scope="module")
def cluster():
    sandbox = Sandbox()
    try:
        images = pull_alpine(sandbox.dir / "images-root")
        nodes = build_cluster(sandbox, images)
        for role in ("node1", "node2"):
            nodes[role].extra_env["PYCTR_NODE_NAME"] = role
        pictures = sandbox.dir / "pictures"
        pictures.mkdir()
        yield SimpleNamespace(sandbox=sandbox, pictures=pictures, **nodes)
    finally:
        sandbox.close()  # containers, processes (etcd, BIRD), namespaces, files


@pytest.fixture(scope="module")
def etcd(cluster):
    start_etcd(cluster.head, cluster.sandbox.dir / "etcd-data", ETCD_URL)
    return ETCD_URL


@pytest.fixture(scope="module")
def calico(cluster, etcd):
    """The cluster network `calico`, defined on node1 and node2."""
    create = ("network", "create", "--driver", "routed", "--subnet", POOL, "--block-size", "28",
              "--datastore", DATASTORE, "calico")
    cluster.node1.pyctr(*create)
    cluster.node2.pyctr(*create)
    return "calico"


def graph(node, name: str, path, check: bool = True) -> subprocess.CompletedProcess:
    return node.pyctr("network", "graph", name, "-o", path, check=check)


# --- one host ---------------------------------------------------------------------------------
def test_one_host_a_bridge_network_with_its_gateway_containers_veths_and_routes(cluster):
    n1 = cluster.node1
    n1.pyctr("network", "create", "--subnet", "172.30.0.0/24", "web")
    bridge = json.loads(n1.pyctr("network", "inspect", "web").stdout)[0]["Options"]["com.docker.network.bridge.name"]
    n1.start("--name", "web1", "--network", "web", *SLEEP)
    n1.start("--name", "web2", "--network", "web", *SLEEP)
    path = cluster.pictures / "web.svg"
    graph(n1, "web", path)
    drawing = Drawing(path)
    lines = drawing.lines()
    assert "network web: bridge, 172.30.0.0/24" in lines
    assert ["node1"] == list(drawing.boxes)
    for text in (bridge, "172.30.0.1/24", "eth0 10.141.0.1/16", "masquerade 172.30.0.0/24",
                 f"172.30.0.0/24 dev {bridge} proto kernel scope link src 172.30.0.1",
                 f"default via {HEAD_UNDERLAY_IP} dev eth0"):
        assert drawing.inside("node1", text), (text, lines)
    for name in ("web1", "web2"):
        cid = n1.inspect(name, "{{.Id}}")
        assert drawing.inside("node1", name)
        assert drawing.inside("node1", f"eth0 {n1.ip_of(name)}/24")
        assert drawing.inside("node1", f"veth{cid[:8]}")
    # The default route's next hop, drawn outside the host.
    assert HEAD_UNDERLAY_IP in lines and not drawing.inside("node1", HEAD_UNDERLAY_IP)


def test_one_host_a_routed_network_with_host_routes_blackhole_and_a_route_to_another_node(cluster):
    n1 = cluster.node1
    n1.pyctr("network", "create", "--driver", "routed", "--subnet", "172.20.35.0/24", "local-calico")
    n1.pyctr("network", "route", "add", "local-calico", "172.20.36.0/24", "via", "10.141.0.2")
    n1.start("--name", "r1", "--network", "local-calico", *SLEEP)
    n1.start("--name", "r2", "--network", "local-calico", *SLEEP)
    n1.pyctr("stop", "-t", "0", "r2")  # keeps its address, loses its veth
    path = cluster.pictures / "local-calico.svg"
    graph(n1, "local-calico", path)
    drawing = Drawing(path)
    r1, veth1 = n1.ip_of("r1"), f"veth{n1.inspect('r1', '{{.Id}}')[:8]}"
    for text in ("r1", f"eth0 {r1}/32", veth1, "block 172.20.35.0/24", "blackhole 172.20.35.0/24",
                 f"{r1} dev {veth1} scope link", "172.20.36.0/24 via 10.141.0.2 dev eth0", "r2"):
        assert drawing.inside("node1", text), (text, drawing.lines())
    assert not any(line.startswith(f"veth{n1.inspect('r2', '{{.Id}}')[:8]}") for line in drawing.lines())
    # The other node, as a next hop with the block behind it.
    assert "10.141.0.2" in drawing.lines() and "via it: 172.20.36.0/24" in drawing.lines()
    assert not drawing.inside("node1", "10.141.0.2")

    png = cluster.pictures / "local-calico.png"
    graph(n1, "local-calico", png)
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 2000


# --- the cluster, from the datastore ----------------------------------------------------------
def start_bird(node, me: str, peers: dict) -> None:
    """BIRD for `node`, its control socket where `pyctr node start` puts it."""
    folder = node.state / "node"
    folder.mkdir(exist_ok=True)
    config = folder / "bird.conf"
    sessions = "".join(BIRD_SESSION.format(me=me, peer=peer, address=address) for peer, address in peers.items())
    config.write_text(BIRD_CONFIG.format(me=me, sessions=sessions))
    node.spawn("bird", "-f", "-c", config, "-s", folder / "bird.ctl", "-P", folder / "bird.pid",
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def established(node, peer: str) -> bool:
    out = node.run("birdc", "-s", node.state / "node" / "bird.ctl", "show", "protocols", f"mesh_{peer}",
                   check=False).stdout
    return "Established" in out


def test_the_cluster_nodes_blocks_containers_gateway_and_bgp_sessions(cluster, etcd, calico):
    n1, n2, head = cluster.node1, cluster.node2, cluster.head
    n1.start("--name", "a1", "--network", "calico", *SLEEP)
    n2.start("--name", "b1", "--network", "calico", *SLEEP)
    n2.start("--name", "b2", "--network", "calico", *SLEEP)
    a1, b1, b2 = n1.ip_of("a1"), n2.ip_of("b1"), n2.ip_of("b2")
    block1, block2 = "172.19.0.0/28", "172.19.0.16/28"  # node1 claimed first
    n1.pyctr("network", "route", "add", "calico", block2, "via", "10.141.0.2")
    n2.pyctr("network", "route", "add", "calico", block1, "via", "10.141.0.1")
    for name, doc in NODE_DOCS.items():
        etcd_put(head, etcd, f"/pyctr/nodes/{name}", doc)
    start_bird(n1, "10.141.0.1", {"node2": "10.141.0.2", "head": HEAD_UNDERLAY_IP})
    start_bird(n2, "10.141.0.2", {"node1": "10.141.0.1"})
    eventually(lambda: established(n1, "node2"), timeout=20)

    path = cluster.pictures / "calico.svg"
    graph(n1, "calico", path)
    drawing = Drawing(path)
    lines = drawing.lines()
    assert "network calico: routed, 172.19.0.0/16 (the cluster, from its datastore)" in lines
    assert set(drawing.boxes) == {"node1", "node2", "head (gateway)"}
    for box, texts in {
        "node1": ["10.141.0.1", "AS 64512", f"block {block1}", "a1", f"eth0 {a1}/32",
                  f"veth{n1.inspect('a1', '{{.Id}}')[:8]}", f"{block2} via 10.141.0.2 dev eth0"],
        # node1 knows node2's containers by their IDs only.
        "node2": ["10.141.0.2", f"block {block2}", n2.inspect("b1", "{{.Id}}")[:12], f"eth0 {b1}/32",
                  n2.inspect("b2", "{{.Id}}")[:12], f"eth0 {b2}/32"],
        "head (gateway)": [HEAD_UNDERLAY_IP, "masquerade 172.19.0.0/16 out up0"],
    }.items():
        for text in texts:
            assert drawing.inside(box, text), (box, text, lines)
    assert "b1" not in lines
    assert "BGP Established" in lines  # node1 – node2
    head_session = [line for line in lines if line.startswith("BGP ") and line != "BGP Established"]
    assert len(head_session) == 1 and head_session[0].split()[1] in ("Active", "Connect", "Idle"), lines
    assert "the outside" in lines and "out up0" in lines

    # node2 names its own containers.
    path2 = cluster.pictures / "calico-node2.svg"
    graph(n2, "calico", path2)
    drawing2 = Drawing(path2)
    assert drawing2.inside("node2", "b1") and drawing2.inside("node2", "b2")


# --- bad input --------------------------------------------------------------------------------
def test_bad_input_is_one_line_125_and_leaves_no_file(cluster, calico):
    n1, head = cluster.node1, cluster.head
    folder = cluster.pictures / "bad"
    folder.mkdir()
    fails_in_one_line(graph(n1, "nosuch", folder / "x.svg", check=False), "network nosuch not found")
    fails_in_one_line(graph(n1, "calico", folder / "x.jpg", check=False), "x.jpg", ".svg or .png")
    fails_in_one_line(graph(n1, "calico", folder / "x", check=False), ".svg or .png")
    fails_in_one_line(graph(n1, "calico", folder / "no" / "x.svg", check=False), "cannot write")
    # etcd refuses node1 (a TCP reset): the datastore cannot be reached.
    head.nft("add table ip cutoff\n"
             "add chain ip cutoff input { type filter hook input priority -5; policy accept; }\n"
             "add rule ip cutoff input ip saddr 10.141.0.1 tcp dport 2379 reject with tcp reset\n")
    try:
        result = graph(n1, "calico", folder / "x.svg", check=False)
    finally:
        head.nft("delete table ip cutoff\n")
    fails_in_one_line(result, DATASTORE, "cannot be reached")
    assert list(folder.iterdir()) == []
    graph(n1, "calico", folder / "x.svg")  # reachable again
    assert [p.name for p in folder.iterdir()] == ["x.svg"]
